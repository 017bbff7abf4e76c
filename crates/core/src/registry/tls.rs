//! The registry's side of mutual TLS: its server certificate, key and the CA as swarm secrets
//! named by fingerprint, the environment that makes it require client certificates, and a
//! deployed service's certificates read back.

use std::collections::HashMap;

use bollard::models::{SecretSpec, TaskSpecContainerSpecFile, TaskSpecContainerSpecSecrets};
use bollard::query_parameters::ListSecretsOptionsBuilder;
use bollard::Docker;

use crate::error::{Error, Result};
use crate::tls::Material;

/// Swarm secrets holding the registry's TLS files are named this, then `cert-`, `key-` or
/// `ca-`, then the registry fingerprint: secrets cannot change, so new certificates get new
/// secrets, and the name says which certificates a deployed registry serves.
pub const SECRET_PREFIX: &str = "lab-registry-tls-";
/// Where the registry's task finds them.
pub(crate) const CERT_FILE: &str = "/run/secrets/lab-registry-tls.crt";
pub(crate) const KEY_FILE: &str = "/run/secrets/lab-registry-tls.key";
pub(crate) const CA_FILE: &str = "/run/secrets/lab-registry-ca.crt";

/// The registry's environment for mutual TLS. distribution reads `http.tls.clientcas`, a list,
/// from the environment as YAML: `[/path]` (a bare path is a configuration error,
/// "cannot unmarshal !!str into []string"; checked with distribution 2.8.2's own binary).
/// With client CAs set, it requires and verifies a client certificate from them.
///
/// Relative URLs: the nodes reach the registry through their relays ([`crate::registry::relay`]), in
/// plain HTTP on `localhost:5000`, while the registry sees TLS; the absolute upload URLs it
/// would build from that say `https://localhost:5000/...`, where dockerd finds the relay
/// speaking plain HTTP. A relative `Location` is resolved against the URL dockerd used.
pub fn registry_env() -> Vec<String> {
    vec![
        "REGISTRY_HTTP_RELATIVEURLS=true".to_string(),
        format!("REGISTRY_HTTP_TLS_CERTIFICATE={CERT_FILE}"),
        format!("REGISTRY_HTTP_TLS_KEY={KEY_FILE}"),
        format!("REGISTRY_HTTP_TLS_CLIENTCAS=[{CA_FILE}]"),
    ]
}

/// Which certificates a registry service serves, from its environment and secrets: `None`
/// for plain HTTP; the registry fingerprint its secrets are named by; `?` for TLS that is not
/// lab's.
pub fn deployed_fingerprint(env: &[String], secrets: &[TaskSpecContainerSpecSecrets]) -> Option<String> {
    if !env.iter().any(|e| e.starts_with("REGISTRY_HTTP_TLS_")) {
        return None;
    }
    let ours = registry_env().iter().all(|e| env.contains(e));
    let names: Vec<&str> = secrets.iter().filter_map(|s| s.secret_name.as_deref()).collect();
    let fp = names.iter().find_map(|n| n.strip_prefix(SECRET_PREFIX).and_then(|r| r.strip_prefix("cert-")));
    match fp {
        Some(fp)
            if ours && ["key", "ca"].iter().all(|k| names.contains(&format!("{SECRET_PREFIX}{k}-{fp}").as_str())) =>
        {
            Some(fp.to_string())
        }
        _ => Some("?".into()),
    }
}

/// The registry's TLS secrets for `m` (made if missing), as its task references them.
pub async fn registry_secrets(
    mgr_name: &str,
    mgr: &Docker,
    m: &Material,
    labels: &HashMap<String, String>,
) -> Result<Vec<TaskSpecContainerSpecSecrets>> {
    let fp = m.registry_fingerprint();
    let mut out = Vec::new();
    for (kind, body, file, mode) in [
        ("cert", m.server_cert.as_str(), CERT_FILE, 0o444),
        ("key", m.server_key(), KEY_FILE, 0o400),
        ("ca", m.ca_cert.as_str(), CA_FILE, 0o444),
    ] {
        let name = format!("{SECRET_PREFIX}{kind}-{fp}");
        let step = format!("make the swarm secret {name}");
        let filters = HashMap::from([("name", vec![name.as_str()])]);
        let found = mgr
            .list_secrets(Some(ListSecretsOptionsBuilder::new().filters(&filters).build()))
            .await
            .map_err(|e| Error::engine(mgr_name, &step, e))?;
        let id = match found.into_iter().find(|s| s.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(&name)) {
            Some(s) => s.id.unwrap_or_default(),
            None => {
                let spec = SecretSpec {
                    name: Some(name.clone()),
                    labels: Some(labels.clone()),
                    data: Some(crate::registry::secret::base64(body.as_bytes())),
                    ..Default::default()
                };
                match mgr.create_secret(spec).await {
                    Ok(r) => r.id,
                    // Made concurrently: ask again.
                    Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {
                        let found = mgr
                            .list_secrets(Some(ListSecretsOptionsBuilder::new().filters(&filters).build()))
                            .await
                            .map_err(|e| Error::engine(mgr_name, &step, e))?;
                        found.into_iter().find_map(|s| s.id).unwrap_or_default()
                    }
                    Err(e) => return Err(Error::engine(mgr_name, step, e)),
                }
            }
        };
        out.push(TaskSpecContainerSpecSecrets {
            file: Some(TaskSpecContainerSpecFile {
                name: Some(file.trim_start_matches("/run/secrets/").into()),
                uid: Some("0".into()),
                gid: Some("0".into()),
                mode: Some(mode),
            }),
            secret_id: Some(id),
            secret_name: Some(name),
        });
    }
    Ok(out)
}

/// Removes the registry TLS secrets of other certificates than `keep` (best effort: one
/// still used by a task that is going away is removed by a later deploy).
pub async fn remove_stale_secrets(mgr: &Docker, keep: Option<&str>) {
    let filters = HashMap::from([("name", vec![SECRET_PREFIX])]);
    let Ok(found) = mgr.list_secrets(Some(ListSecretsOptionsBuilder::new().filters(&filters).build())).await else {
        return;
    };
    for s in found {
        let name = s.spec.and_then(|s| s.name).unwrap_or_default();
        let current = keep.is_some_and(|k| name.ends_with(&format!("-{k}")));
        if name.starts_with(SECRET_PREFIX) && !current {
            if let Some(id) = s.id {
                let _ = mgr.delete_secret(&id).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::tls::dir;
    use crate::tls::ensure;

    use super::*;

    fn secret(name: &str) -> TaskSpecContainerSpecSecrets {
        TaskSpecContainerSpecSecrets { secret_name: Some(name.into()), ..Default::default() }
    }

    /// The registry's environment names the secrets' files, the client CAs as the YAML list
    /// distribution reads; a deployed service is read back as the certificates it serves.
    #[test]
    fn a_registrys_tls_is_read_back_from_its_environment_and_secrets() {
        let env = registry_env();
        assert!(env.contains(&"REGISTRY_HTTP_TLS_CLIENTCAS=[/run/secrets/lab-registry-ca.crt]".to_string()), "{env:?}");
        assert!(env.iter().any(|e| e.starts_with("REGISTRY_HTTP_TLS_CERTIFICATE=/run/secrets/")));
        assert!(env.iter().any(|e| e.starts_with("REGISTRY_HTTP_TLS_KEY=/run/secrets/")));
        let ours = [
            secret("lab-registry-http-secret"),
            secret("lab-registry-tls-cert-abc"),
            secret("lab-registry-tls-key-abc"),
            secret("lab-registry-tls-ca-abc"),
        ];
        let plain = vec!["REGISTRY_STORAGE_DELETE_ENABLED=true".to_string()];
        assert_eq!(deployed_fingerprint(&plain, &ours), None, "no TLS in the environment: plain HTTP");
        let mut with = plain.clone();
        with.extend(env.clone());
        assert_eq!(deployed_fingerprint(&with, &ours).as_deref(), Some("abc"));
        // A key of other certificates, or TLS set up by hand: TLS, but not lab's current one.
        let mixed = [
            secret("lab-registry-tls-cert-abc"),
            secret("lab-registry-tls-key-old"),
            secret("lab-registry-tls-ca-abc"),
        ];
        assert_eq!(deployed_fingerprint(&with, &mixed).as_deref(), Some("?"));
        let by_hand = vec!["REGISTRY_HTTP_TLS_CERTIFICATE=/certs/x.crt".to_string()];
        assert_eq!(deployed_fingerprint(&by_hand, &ours).as_deref(), Some("?"));
        // What the planner compares against.
        let tmp = tempfile::tempdir().unwrap();
        ensure(&dir(tmp.path()), "c1").unwrap();
        let m = crate::tls::issue_node(&dir(tmp.path()), "c1", "worker1").unwrap();
        assert_eq!(m.registry_fingerprint().len(), 12);
        assert_ne!(Some(m.registry_fingerprint()), m.node_fingerprint("worker1"));
    }
}
