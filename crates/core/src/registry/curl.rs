//! What curl's exit status means, for the messages of the checks that run it on a node
//! (`registry`'s `lab check` and its refusal check in mutual TLS). Those run `curl -s`, which
//! prints nothing when it fails: its exit status is all there is to go on, and "exit 55"
//! means nothing to a user. This is a table and nothing else; `registry` renders with it.

/// What curl's exit `code` means, after the EXIT CODES section of curl's manual, in words a
/// user of lab acts on; `None` for a code this table does not know.
pub fn exit_meaning(code: i64) -> Option<&'static str> {
    Some(match code {
        1 => "unsupported protocol",
        2 => "curl failed to start",
        3 => "the URL is malformed",
        5 => "could not resolve the proxy",
        6 => "could not resolve the host name",
        7 => "could not connect: nothing listens there, or a firewall refused",
        8 => "the server's reply was not HTTP",
        16 => "HTTP/2 framing error",
        18 => "the connection closed before all the data arrived",
        22 => "the server answered with an HTTP error",
        23 => "could not write what it received",
        26 => "could not read its input",
        27 => "out of memory",
        28 => "timed out",
        35 => "the TLS handshake failed",
        43 => "internal error",
        45 => "could not bind the local interface",
        47 => "too many redirects",
        52 => "the server closed the connection without a reply",
        53 => "TLS engine not found",
        55 => "the connection broke while curl sent its request (the server closed or reset it)",
        56 => "the connection broke while curl read the reply (the server closed or reset it)",
        58 => "problem with the client certificate",
        59 => "could not use the TLS cipher",
        60 => "the server's certificate is not signed by a trusted CA",
        61 => "unknown transfer encoding",
        77 => "could not read the CA certificate",
        80 => "the TLS connection did not shut down cleanly",
        83 => "the server certificate's issuer check failed",
        90 => "the server's public key does not match the pinned one",
        91 => "the server certificate's status is invalid",
        92 => "HTTP/2 stream error",
        95 => "HTTP/3 error",
        97 => "proxy handshake failed",
        _ => return None,
    })
}

/// A fetch that did not answer as hoped, for a message: the exit status with what curl's
/// means, then whatever the command printed. A status past 128 is the signal that killed
/// it; a negative one is lab's own "the wait ran out", which `output` explains. Output
/// that starts with `wget:` is busybox wget's (lab's fallback where a node has no curl),
/// whose statuses are not curl's: its own words are all that is shown.
pub fn describe_exit(code: i64, output: &str) -> String {
    let output = output.trim();
    let meaning = match code {
        c if c < 0 => return output.to_string(),
        129..=159 => Some(format!("killed by signal {}", code - 128)),
        _ if output.starts_with("wget:") => None,
        _ => exit_meaning(code).map(|m| format!("curl: {m}")),
    };
    match (meaning, output.is_empty()) {
        (Some(m), true) => format!("exit {code}, {m}"),
        (Some(m), false) => format!("exit {code}, {m}: {output}"),
        (None, true) => format!("exit {code}"),
        (None, false) => format!("exit {code}: {output}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18, item 19: "refused (exit 55)" meant nothing to a user.
    #[test]
    fn an_exit_status_says_what_it_means() {
        assert_eq!(
            describe_exit(55, ""),
            "exit 55, curl: the connection broke while curl sent its request (the server closed or reset it)"
        );
        assert_eq!(
            describe_exit(7, "\n"),
            "exit 7, curl: could not connect: nothing listens there, or a firewall refused"
        );
        assert_eq!(describe_exit(35, ""), "exit 35, curl: the TLS handshake failed");
        assert_eq!(describe_exit(28, ""), "exit 28, curl: timed out");
        // What the command printed is kept.
        assert_eq!(
            describe_exit(22, "404 page not found\n"),
            "exit 22, curl: the server answered with an HTTP error: 404 page not found"
        );
        assert_eq!(describe_exit(0, "{\"errors\":[]}"), "exit 0: {\"errors\":[]}");
    }

    #[test]
    fn what_is_not_curl_s_is_not_read_as_curl_s() {
        let wget = "wget: can't connect to remote host (10.0.0.3): Connection refused";
        assert_eq!(describe_exit(1, wget), format!("exit 1: {wget}"));
        assert_eq!(describe_exit(137, ""), "exit 137, killed by signal 9");
        assert_eq!(describe_exit(-1, "no answer within 20s"), "no answer within 20s");
        assert_eq!(describe_exit(200, ""), "exit 200");
        assert_eq!(exit_meaning(4), None);
    }

    #[test]
    fn every_known_status_has_words() {
        for code in 0..=100 {
            if let Some(m) = exit_meaning(code) {
                assert!(!m.is_empty() && !m.ends_with('.') && m == m.trim(), "{code}: {m:?}");
            }
        }
    }
}
