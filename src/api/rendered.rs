//! The served API document, rendered once per config generation on the blocking pool and
//! shared as `Bytes` by every answer. The document itself is built by the function the cache
//! is given ([`super::openapi::document`] when serving).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::OnceCell;

use serde_json::Value;

use crate::table::RouteTable;

/// Builds the document of a route table.
pub type Document = fn(&RouteTable) -> Value;

/// The document as pretty JSON with a trailing newline: the served and the committed form.
pub fn to_json(doc: &Value) -> String {
    let mut text = serde_json::to_string_pretty(doc).unwrap_or_default();
    text.push('\n');
    text
}

/// The rendered document of one table generation, as JSON and YAML.
///
/// `Bytes`, so every answer shares the one copy (a config of thousands of tasks makes a
/// document of megabytes).
pub struct Rendered {
    /// The document as [`to_json`] writes it.
    pub json: Bytes,
    /// The same document as YAML.
    pub yaml: Bytes,
}

/// Renders the `document` of `table` (slow for thousands of tasks: call it off the serving
/// threads).
pub fn render(document: Document, table: &RouteTable) -> Rendered {
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
/// this the service's resident memory would stay at the peak of the rendering for good.
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
pub(super) struct Cache {
    document: Document,
    slot: Mutex<Option<(u64, Shared)>>,
}

/// One generation's rendering, shared by the requests that wait for it.
type Shared = Arc<OnceCell<Arc<Rendered>>>;

impl Cache {
    /// An empty cache of what `document` builds.
    pub(super) fn new(document: Document) -> Self {
        Self {
            document,
            slot: Mutex::new(None),
        }
    }

    /// The rendering of `table`'s generation, rendering it if nobody has yet.
    pub(super) async fn get(&self, table: Arc<RouteTable>) -> Arc<Rendered> {
        let cell = {
            let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
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
        let document = self.document;
        cell.get_or_init(|| async move {
            match tokio::task::spawn_blocking(move || Arc::new(render(document, &table))).await {
                Ok(rendered) => rendered,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => std::future::pending().await,
            }
        })
        .await
        .clone()
    }
}
