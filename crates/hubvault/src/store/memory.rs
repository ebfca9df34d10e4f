//! An in-memory store for tests: same create-only semantics as the real backends.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use time::OffsetDateTime;

use super::{ByteStream, Error, ObjectMeta, ObjectWriter, Result, Store, check_name};

type Objects = Arc<Mutex<BTreeMap<String, (Bytes, OffsetDateTime)>>>;

/// Lock the map. Every change is one insert or remove, so a panic elsewhere while the lock was
/// held cannot leave it half-updated: a poisoned lock is used as it is.
fn lock(objects: &Objects) -> MutexGuard<'_, BTreeMap<String, (Bytes, OffsetDateTime)>> {
    objects.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Objects held in a map; gone when the store is dropped.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    objects: Objects,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
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
        lock(&self.objects).remove(name);
        Ok(())
    }
}

struct MemoryWriter {
    objects: Objects,
    name: String,
    data: Vec<u8>,
}

#[async_trait]
impl ObjectWriter for MemoryWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
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
