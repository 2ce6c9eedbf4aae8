//! Checks a task's `executable`: that it splits into words and, for a collected one, that it is a
//! file inside the collect folder that can be run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

use super::Language;

/// Checks the `executable` of a task run with `lang`; `Err` says what is wrong with it.
pub fn check(exe: &str, lang: Language, collected: bool, collect_dir: &Path) -> Result<(), String> {
    let first = if lang == Language::Sh {
        exe.split_whitespace().next().map(str::to_string)
    } else {
        shell_words::split(exe)
            .map_err(|e| format!("cannot be split into words: {e}"))?
            .into_iter()
            .next()
    };
    let Some(first) = first else {
        return Err("must not be empty".into());
    };
    if !collected {
        return Ok(());
    }
    let rel = Path::new(&first);
    if rel.is_absolute() {
        return Err(format!(
            "`{first}` is absolute, but a collected executable is a path inside the collect folder"
        ));
    }
    if rel.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "`{first}` uses `..`: a collected executable must stay inside the collect folder"
        ));
    }
    let path = collect_dir.join(rel);
    let meta = std::fs::metadata(&path)
        .map_err(|e| format!("`{}` cannot be read: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("`{}` is not a file", path.display()));
    }
    if lang.needs_exec_bit() && meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "`{}` is not executable (language `{}` runs it directly): chmod +x it",
            path.display(),
            lang.as_str()
        ));
    }
    Ok(())
}
