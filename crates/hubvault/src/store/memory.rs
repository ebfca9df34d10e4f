//! An in-memory store: same create-only semantics as the real backends, for clone's ephemeral
//! snapshot and for tests, with injectable faults ([`Faults`]) so a test can make a write or a
//! delete fail, see the order of deletions, set the store's clock and age objects.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use time::OffsetDateTime;

use super::{ByteStream, Error, ObjectMeta, ObjectWriter, Result, Store, check_name};

type Objects = Arc<Mutex<BTreeMap<String, (Bytes, OffsetDateTime)>>>;

/// Lock the map (or the faults). Every change is one insert, remove or field update, so a panic
/// elsewhere while the lock was held cannot leave it half-updated: a poisoned lock is used as it is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Objects held in a map; gone when the store is dropped. Clones share the objects and faults.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    objects: Objects,
    faults: Arc<Mutex<Faults>>,
}

/// What a test makes the store do, and what it saw.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Deleting this object fails (a permission or network error).
    pub fail_delete: Option<String>,
    /// Writers fail on their chunk after this many (a full disk, a dropped connection).
    pub fail_write_after: Option<usize>,
    /// The store's clock ([`Store::now`]); the local clock when `None`.
    pub clock: Option<OffsetDateTime>,
    /// Every successful delete, in order.
    pub deleted: Vec<String>,
    /// The cut-off of the last temporaries sweep.
    pub swept_before: Option<OffsetDateTime>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Change the faults (and read what was recorded) under the store's lock.
    pub fn faults<T>(&self, f: impl FnOnce(&mut Faults) -> T) -> T {
        f(&mut lock(&self.faults))
    }

    /// Put an object directly, with a given modification time (for aging tests).
    pub fn insert(&self, name: &str, data: &[u8], modified: OffsetDateTime) {
        lock(&self.objects).insert(name.to_owned(), (Bytes::copy_from_slice(data), modified));
    }

    /// Every object's name.
    pub fn names(&self) -> Vec<String> {
        lock(&self.objects).keys().cloned().collect()
    }
}

const LOCATION: &str = "memory store";

#[async_trait]
impl Store for MemoryStore {
    fn location(&self) -> String {
        LOCATION.to_owned()
    }

    async fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>> {
        check_name(name)?;
        Ok(Box::new(MemoryWriter {
            objects: self.objects.clone(),
            name: name.to_owned(),
            data: Vec::new(),
            chunks: 0,
            fail_after: lock(&self.faults).fail_write_after,
        }))
    }

    async fn get(&self, name: &str) -> Result<ByteStream> {
        check_name(name)?;
        let data = lock(&self.objects).get(name).map(|(d, _)| d.clone());
        match data {
            // Several chunks, so readers meet chunk boundaries as they would on a real store.
            Some(d) => {
                let chunks: Vec<Result<Bytes>> = (0..d.len())
                    .step_by(64 * 1024)
                    .map(|i| Ok(d.slice(i..d.len().min(i.saturating_add(64 * 1024)))))
                    .collect();
                Ok(Box::pin(futures::stream::iter(chunks)))
            }
            None => Err(Error::NotFound {
                store: LOCATION.to_owned(),
                name: name.to_owned(),
            }),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let objects = lock(&self.objects);
        Ok(objects
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (d, t))| ObjectMeta {
                name: k.clone(),
                size: d.len() as u64,
                last_modified: *t,
            })
            .collect())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let mut faults = lock(&self.faults);
        if faults.fail_delete.as_deref() == Some(name) {
            return Err(Error::Backend {
                store: LOCATION.to_owned(),
                detail: "injected failure".into(),
            });
        }
        lock(&self.objects).remove(name);
        faults.deleted.push(name.to_owned());
        Ok(())
    }

    async fn now(&self) -> Result<OffsetDateTime> {
        Ok(lock(&self.faults)
            .clock
            .unwrap_or_else(OffsetDateTime::now_utc))
    }

    /// Memory has no temporaries; the cut-off is recorded for tests.
    async fn sweep_temporaries(&self, older_than: OffsetDateTime) -> Result<usize> {
        lock(&self.faults).swept_before = Some(older_than);
        Ok(0)
    }
}

struct MemoryWriter {
    objects: Objects,
    name: String,
    data: Vec<u8>,
    chunks: usize,
    fail_after: Option<usize>,
}

#[async_trait]
impl ObjectWriter for MemoryWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if self.fail_after.is_some_and(|n| self.chunks >= n) {
            return Err(Error::Backend {
                store: LOCATION.to_owned(),
                detail: "disk full".into(),
            });
        }
        self.chunks = self.chunks.saturating_add(1);
        self.data.extend_from_slice(&chunk);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<ObjectMeta> {
        let mut objects = lock(&self.objects);
        if objects.contains_key(&self.name) {
            return Err(Error::AlreadyExists {
                store: LOCATION.to_owned(),
                name: self.name,
            });
        }
        let now = OffsetDateTime::now_utc();
        let size = self.data.len() as u64;
        objects.insert(self.name.clone(), (Bytes::from(self.data), now));
        Ok(ObjectMeta {
            name: self.name,
            size,
            last_modified: now,
        })
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_store_passes_the_conformance_suite() {
        super::super::conformance::run(&super::MemoryStore::new()).await;
    }
}
