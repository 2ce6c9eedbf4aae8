//! The served API document, rendered once per config generation on the blocking pool and
//! shared as `Bytes` by every answer (see [`super::openapi`]).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::OnceCell;

use super::openapi::{document, to_json};
use crate::table::RouteTable;

/// The rendered document of one table generation, as JSON and YAML.
///
/// `Bytes`, so every answer shares the one copy (a config of 2,000 tasks makes a 5 MB document).
pub struct Rendered {
    /// The document as [`to_json`] writes it.
    pub json: Bytes,
    /// The same document as YAML.
    pub yaml: Bytes,
}

/// Renders the document of `table` (hundreds of milliseconds for thousands of tasks: call it
/// off the serving threads).
pub fn render(table: &RouteTable) -> Rendered {
    let doc = document(table);
    let mut json = to_json(&doc);
    let mut yaml = serde_yaml_ng::to_string(&doc).unwrap_or_default();
    drop(doc);
    // `Bytes` keeps a string's whole allocation, which its growth while rendering left up to
    // twice the text's size.
    json.shrink_to_fit();
    yaml.shrink_to_fit();
    let rendered = Rendered {
        json: Bytes::from(json),
        yaml: Bytes::from(yaml),
    };
    release_freed_memory();
    rendered
}

/// Gives the memory freed after rendering back to the system.
///
/// Building the document of thousands of tasks takes several times the size of the finished texts
/// in short-lived values. glibc keeps what a thread frees in that thread's arena, so without
/// this the service's RSS stayed at the peak of the rendering (about 100 MB for 2,000 tasks,
/// BENCHMARKS.md) for good.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointers and has no preconditions; it only returns free pages
    // of every arena to the system, under the allocator's own locks.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// The rendered document of the current table generation, rendered once per generation on the
/// blocking pool, by whichever request asks first; the others wait for that one rendering.
#[derive(Default)]
pub(super) struct Cache(Mutex<Option<(u64, Shared)>>);

/// One generation's rendering, shared by the requests that wait for it.
type Shared = Arc<OnceCell<Arc<Rendered>>>;

impl Cache {
    pub(super) async fn get(&self, table: Arc<RouteTable>) -> Arc<Rendered> {
        let cell = {
            let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some((generation, cell)) if *generation == table.generation => cell.clone(),
                // A newer generation replaces the old one; an older table (a request that loaded
                // it before a reload) is rendered without being kept.
                Some((generation, _)) if *generation > table.generation => {
                    Arc::new(OnceCell::new())
                }
                _ => {
                    let cell = Arc::new(OnceCell::new());
                    *slot = Some((table.generation, cell.clone()));
                    cell
                }
            }
        };
        cell.get_or_init(|| async move {
            match tokio::task::spawn_blocking(move || Arc::new(render(&table))).await {
                Ok(rendered) => rendered,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => std::future::pending().await,
            }
        })
        .await
        .clone()
    }
}
