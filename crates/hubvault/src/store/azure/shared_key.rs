//! The `azure_core` pipeline policy that signs each try with the storage account key.
//!
//! `azure_storage_blob` has no Shared Key credential; this per-try policy fills the gap
//! (docs/azure.md#shared-key). Per try, so a retried request gets a fresh `x-ms-date`. The Content-Length
//! comes from the body (the pipeline request carries no such header), and the `Range` header
//! of partitioned downloads is one of the signed standard headers.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use time::OffsetDateTime;

use crate::store::sas::{SharedKey, rfc1123};

#[derive(Debug)]
pub(super) struct SharedKeyPolicy(pub(super) Arc<SharedKey>);

#[async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        request.insert_header("x-ms-date", rfc1123(OffsetDateTime::now_utc()));
        let headers: BTreeMap<String, String> = request
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.as_str().to_owned()))
            .collect();
        let sts = self.0.string_to_sign(
            request.method().as_str(),
            request.url(),
            &headers,
            request.body().len(),
        );
        request.insert_header("authorization", self.0.authorization(&sts));
        next[0].send(ctx, request, &next[1..]).await
    }
}
