//! The store's settings from the `--db-*` and `--result-*` flags, the password kept out of every
//! log line, and the connection strings built from them.

use std::path::PathBuf;
use std::time::Duration;

/// A password, kept out of every `Debug`, log line and error.
#[derive(Clone, Default)]
pub struct Secret(Option<String>);

impl Secret {
    /// Wraps a password.
    pub fn new(password: Option<String>) -> Self {
        Self(password.filter(|p| !p.is_empty()))
    }

    /// The password: `password` if given, else the one inside a `mongodb://user:pw@…` address.
    pub fn of(password: Option<String>, address: Option<&str>) -> Self {
        let embedded = address.and_then(|a| {
            let rest = a.split_once("://")?.1;
            let userinfo = rest.split('/').next()?.rsplit_once('@')?.0;
            let pw = userinfo.split_once(':')?.1;
            percent_encoding::percent_decode_str(pw)
                .decode_utf8()
                .ok()
                .map(|p| p.into_owned())
        });
        Self::new(password.or(embedded))
    }

    /// `text` with the password (as typed and percent-encoded) replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        match &self.0 {
            Some(p) => text.replace(&encode(p), "***").replace(p.as_str(), "***"),
            None => text.to_string(),
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "***" } else { "None" })
    }
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Where records go, from the `--db-*` and `--result-*` flags.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `--db-address`: `host:port` or a full `mongodb://` URI; `None` = the embedded store.
    pub address: Option<String>,
    /// `--db-user`.
    pub user: Option<String>,
    /// `--db-password`.
    pub password: Secret,
    /// `--db-name`.
    pub db_name: String,
    /// `--result-db-file`: the embedded store, or the spool when MongoDB is used.
    pub file: PathBuf,
    /// `--result-retention`: ended records older than this are deleted.
    pub retention: Duration,
    /// `--replica-timeout`: running records whose owner has not heartbeated for this long are
    /// marked lost.
    pub replica_timeout: Duration,
    /// `--no-result-store`: no record is written anywhere.
    pub off: bool,
}

impl StoreSettings {
    /// The connection string with the password, as scripts get it in `CS_RESULT_DB_URI`
    /// (`file:<path>` for the embedded store).
    pub fn uri(&self) -> String {
        self.build_uri(false)
    }

    /// The connection string with the password as `***`, for logs and `/-/store`.
    pub fn redacted_uri(&self) -> String {
        self.password.redact(&self.build_uri(true))
    }

    fn build_uri(&self, redact: bool) -> String {
        let password = match &self.password.0 {
            Some(_) if redact => Some("***".to_string()),
            Some(p) => Some(encode(p)),
            None => None,
        };
        let Some(address) = &self.address else {
            return format!("file:{}", self.file.display());
        };
        let credentials = match (&self.user, password) {
            (Some(user), Some(p)) => format!("{}:{p}@", encode(user)),
            (Some(user), None) => format!("{}@", encode(user)),
            (None, _) => String::new(),
        };
        for scheme in ["mongodb://", "mongodb+srv://"] {
            if let Some(rest) = address.strip_prefix(scheme) {
                let authority = rest.split('/').next().unwrap_or("");
                if authority.contains('@') {
                    return address.clone();
                }
                return format!("{scheme}{credentials}{rest}");
            }
        }
        format!("mongodb://{credentials}{address}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(
        address: Option<&str>,
        user: Option<&str>,
        password: Option<&str>,
    ) -> StoreSettings {
        StoreSettings {
            address: address.map(Into::into),
            user: user.map(Into::into),
            password: Secret::new(password.map(Into::into)),
            db_name: "cs".into(),
            file: "results.sqlite3".into(),
            retention: Duration::from_secs(1),
            replica_timeout: Duration::from_secs(1),
            off: false,
        }
    }

    #[test]
    fn uris_carry_credentials_and_redact_the_password() {
        let s = settings(Some("db:27017"), Some("u@x"), Some("p:w/d"));
        assert_eq!(s.uri(), "mongodb://u%40x:p%3Aw%2Fd@db:27017/");
        assert_eq!(s.redacted_uri(), "mongodb://u%40x:***@db:27017/");
        assert!(!format!("{s:?}").contains("p:w/d"));
        assert_eq!(
            s.password.redact("bad p%3Aw%2Fd and p:w/d"),
            "bad *** and ***"
        );
        let full = settings(Some("mongodb://h1,h2/?replicaSet=r"), Some("u"), Some("pw"));
        assert_eq!(full.uri(), "mongodb://u:pw@h1,h2/?replicaSet=r");
        let mut given = settings(Some("mongodb://a:s3cret@h/"), Some("u"), None);
        given.password = Secret::of(None, given.address.as_deref());
        assert_eq!(given.uri(), "mongodb://a:s3cret@h/");
        assert_eq!(given.redacted_uri(), "mongodb://a:***@h/");
        assert_eq!(settings(Some("h:1"), None, None).uri(), "mongodb://h:1/");
        assert_eq!(settings(None, None, None).uri(), "file:results.sqlite3");
    }
}
