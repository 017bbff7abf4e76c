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

/// Standard base64 with padding, for a swarm secret's `Data`.
pub(crate) fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
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
