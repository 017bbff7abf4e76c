//! `lab registry`: the way into the cluster's registry for other clients (skopeo, crane, oras,
//! curl), and `lab registry forward`, which offers it on this machine's loopback for clients
//! that cannot connect to one address while checking the name `localhost`.

use std::sync::Arc;

use lab_core::cluster::Silent;
use lab_core::converge::runtime::Runtime;
use lab_core::images::distribution::{forward as forward_to, Client};
use lab_core::registry::clients::{self, WayIn};
use lab_core::{Error, Result};

use super::cluster::existing;
use crate::args::{Output, RegistryAction, RegistryArgs};

pub(super) async fn registry(config: Option<&std::path::Path>, args: &RegistryArgs) -> Result<i32> {
    let (rt, _, _) = existing(config, args.cluster.as_deref(), Arc::new(Silent), true).await?;
    rt.set_machines(rt.driver.observe().await?);
    let way = clients::way_in(&rt).await?;
    match &args.action {
        None => show(&way, args.output),
        Some(RegistryAction::Forward { listen }) => forward(&rt, &way, *listen, args.output).await,
    }
}

/// Prints the way in: the URL, the address, and in mutual TLS the files; examples on stderr.
fn show(way: &WayIn, output: Output) -> Result<i32> {
    if output == Output::Json {
        outln!("{}", serde_json::to_string_pretty(way).expect("json"))?;
        return Ok(0);
    }
    let mut rows = vec![("node", way.node.clone()), ("tls", way.tls.to_string()), ("url", way.url.clone())];
    rows.push(("address", way.address.clone()));
    if let Some(f) = &way.files {
        for (k, p) in [("ca", &f.ca), ("cert", &f.cert), ("key", &f.key), ("cert-dir", &f.cert_dir)] {
            rows.push((k, p.display().to_string()));
        }
    }
    for (k, v) in rows {
        outln!("{k:<9} {v}")?;
    }
    for line in examples(way) {
        errln!("{line}");
    }
    Ok(0)
}

/// How to use it with common clients (`NAME:TAG` stands for an image `lab images` lists).
fn examples(way: &WayIn) -> Vec<String> {
    let a = &way.address;
    match &way.files {
        None => vec![
            "for example:".into(),
            format!("  curl {}/v2/_catalog", way.url),
            format!("  skopeo inspect --tls-verify=false docker://{a}/NAME:TAG"),
            format!("  crane ls --insecure {a}/NAME"),
            format!("  oras repo tags --plain-http {a}/NAME"),
        ],
        Some(f) => {
            let (ca, cert, key) = (f.ca.display(), f.cert.display(), f.key.display());
            let name = way.url.trim_start_matches("https://");
            // curl's --resolve takes HOST:PORT:ADDR; oras's also takes the port after it.
            let host = a.rsplit_once(':').map_or(a.as_str(), |(h, _)| h);
            vec![
                format!("the registry's certificate names localhost, not {a}: connect to {a} checking the name localhost"),
                "for example:".into(),
                format!("  curl --cacert {ca} --cert {cert} --key {key} --resolve {name}:{host} {}/v2/_catalog", way.url),
                format!("  oras repo tags --ca-file {ca} --cert-file {cert} --key-file {key} --resolve {name}:{a} {name}/NAME"),
                format!("clients without --resolve (skopeo, podman): `lab registry forward` relays {name} on this machine, then"),
                format!("  skopeo inspect --cert-dir {} docker://{name}/NAME:TAG", f.cert_dir.display()),
            ]
        }
    }
}

/// Relays this machine's `listen` (default `127.0.0.1` and the registry's own port) to the
/// registry, through its node's engine, until Ctrl-C, SIGTERM or SIGHUP; prints the URL to use
/// on stdout.
async fn forward(rt: &Runtime, way: &WayIn, listen: Option<std::net::SocketAddr>, output: Output) -> Result<i32> {
    let client = Client::new(lab_core::registry::endpoint(rt).await?);
    let port = way.address.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(lab_core::registry::PORT);
    let listen = listen.unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::input("--listen", format!("cannot listen on {listen}: {e}")))?;
    let at = listener.local_addr().map_err(|e| Error::op_caused("lab registry forward", e))?;
    let scheme = if way.files.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://localhost:{}", at.port());
    match output {
        Output::Json => outln!("{}", serde_json::json!({"url": url, "listen": at.to_string(), "to": way.address}))?,
        Output::Table => outln!("{url}")?,
    }
    errln!("relaying {at} to the registry on {}, through its engine; Ctrl-C stops", way.node);
    let stop = async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut streams: Vec<_> = [SignalKind::interrupt(), SignalKind::terminate(), SignalKind::hangup()]
            .into_iter()
            .filter_map(|k| signal(k).ok())
            .collect();
        futures_util::future::select_all(streams.iter_mut().map(|s| Box::pin(s.recv()))).await;
    };
    tokio::select! {
        r = forward_to(client, listener, |m| errln!("{m}")) => r.map(|()| 0),
        () = stop => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_core::registry::clients::ClientFiles;

    /// The examples name the address in each client's own syntax: curl's `--resolve` takes
    /// HOST:PORT:ADDR, oras's HOST:PORT:ADDR:PORT.
    #[test]
    fn the_mutual_examples_resolve_localhost_to_the_registrys_address() {
        let files = ClientFiles {
            ca: "/t/ca.crt".into(),
            cert: "/t/client.cert".into(),
            key: "/t/client.key".into(),
            cert_dir: "/t/client".into(),
        };
        let way = WayIn {
            node: "worker1".into(),
            tls: "mutual",
            url: "https://localhost:5443".into(),
            address: "10.0.0.7:5443".into(),
            files: Some(files),
        };
        let text = examples(&way).join("\n");
        assert!(text.contains("curl --cacert /t/ca.crt --cert /t/client.cert --key /t/client.key --resolve localhost:5443:10.0.0.7 https://localhost:5443/v2/_catalog"), "{text}");
        assert!(text.contains("--resolve localhost:5443:10.0.0.7:5443 localhost:5443/NAME"), "{text}");
        assert!(text.contains("skopeo inspect --cert-dir /t/client docker://localhost:5443/NAME:TAG"), "{text}");
    }
}
