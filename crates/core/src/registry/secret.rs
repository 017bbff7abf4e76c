//! The registry's HTTP secret: a swarm secret made once with 32 random bytes, which only the
//! registry's task reads and lab never sees again.

use std::collections::HashMap;

use bollard::models::SecretSpec;
use bollard::query_parameters::ListSecretsOptionsBuilder;
use bollard::Docker;

use crate::error::{Error, Result};
use crate::registry::namespace;
use crate::registry::SECRET_NAME;
use crate::state::Secret;

/// The swarm secret's ID, made (32 random bytes) the first time. Swarm secrets cannot be read
/// back through the API, so lab never sees it again; the registry keeps the same secret
/// across every redeploy.
pub(crate) async fn ensure_secret(mgr_name: &str, mgr: &Docker) -> Result<String> {
    let step = format!("make the swarm secret {SECRET_NAME}");
    let filters = HashMap::from([("name", vec![SECRET_NAME])]);
    let found = mgr
        .list_secrets(Some(ListSecretsOptionsBuilder::new().filters(&filters).build()))
        .await
        .map_err(|e| Error::engine(mgr_name, &step, e))?;
    if let Some(id) = found
        .into_iter()
        .find(|s| s.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(SECRET_NAME))
        .and_then(|s| s.id)
    {
        return Ok(id);
    }
    let value = Secret::random()?;
    let spec = SecretSpec {
        name: Some(SECRET_NAME.into()),
        labels: Some(namespace()),
        data: Some(base64(value.expose().as_bytes())),
        ..Default::default()
    };
    match mgr.create_secret(spec).await {
        Ok(r) => Ok(r.id),
        // Made concurrently: take that one.
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {
            Box::pin(ensure_secret(mgr_name, mgr)).await
        }
        Err(e) => Err(Error::engine(mgr_name, step, e)),
    }
}

/// Standard base64 with padding, for the swarm secret's `Data`.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        for (input, want) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }
}
