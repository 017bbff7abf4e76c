//! Whether a node's own Docker engine reaches the registry at `localhost:5000`, the way
//! `docker push` and `docker pull` need it to, next to [`crate::registry`]'s check of what
//! curl on the node gets.
//!
//! The two can disagree (issue 8). curl may never try `::1`: on the test bed's nodes the C
//! library gives `localhost` as 127.0.0.1 only (`getent ahosts localhost`), IPv6 loopback or
//! not. dockerd, a Go program, reads `/etc/hosts` itself and dials `::1` first, and it keeps a
//! connection that was accepted. So where something on `[::1]:5000` accepts and never answers
//! (dockerd's own ingress listener before Docker 29.8, moby issue 53091), curl says `{}` and
//! every push and pull times out.
//!
//! So lab asks the engine: `GET /distribution/localhost:5000/lab-check:none/json` (what
//! `docker manifest inspect` and `docker service create` use) makes dockerd resolve
//! `localhost`, connect and talk to the registry as a pull would. The registry has no such
//! image, so a registry that answers says "manifest unknown"; anything else is dockerd failing
//! to get there, in its own words. [`interpret`] reads those words (a pure function). When
//! `localhost` fails, the same question for `127.0.0.1:5000` and for `::1` says which address
//! family is at fault ([`diagnose`]).
//!
//! Two things about `::1` that Docker 20.10 (API 1.41) shows and later engines may not:
//! - It refuses `[::1]:5000/...` as "invalid reference format" (its reference grammar has no
//!   IPv6 literals), so lab then asks for `ip6-localhost:5000` and `localhost6:5000`, the names
//!   Debian's and Red Hat's `/etc/hosts` (and Docker's own, in containers) give `::1`.
//! - Its default insecure registries are `127.0.0.0/8` only, so for `::1` it speaks TLS: a
//!   listener that never answers gives "TLS handshake timeout", and a plain-HTTP registry
//!   there "server gave HTTP response to HTTPS client", which means `::1` answers, not that it
//!   hangs.

use std::time::Duration;

use bollard::Docker;
use serde::Serialize;

use crate::error::engine_message;
use crate::registry::PORT;

/// The repository and tag lab asks about. No one pushes it, so a registry that answers says
/// "manifest unknown".
pub const PROBE_IMAGE: &str = "lab-check:none";

/// How long lab waits for the engine's answer. dockerd's own timeouts come first where it has
/// them, so its words are quoted: Docker 20.10 gives up on a `localhost:5000` that never
/// answers after 25 s (10 s for the TLS handshake it tries first, 15 s for plain HTTP). An
/// engine still silent after this counts as hanging.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(40);

/// What an engine's answer says about the registry address it was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reach {
    /// A registry answered: with the image, or with its own refusal ("manifest unknown",
    /// "unauthorized").
    Answers,
    /// Something answered in plain HTTP where dockerd spoke TLS (an address dockerd does not
    /// count as an insecure registry, such as `::1` on Docker 20.10): the address answers.
    PlainHttp,
    /// The connection was accepted and nothing answered: dockerd's "awaiting headers" or "TLS
    /// handshake timeout", or no answer from dockerd within [`ASK_TIMEOUT`].
    Hangs,
    /// Nothing listens there.
    Refused,
    /// dockerd cannot be asked this way: the reference is not one it accepts, or the name
    /// does not resolve on the node.
    CannotAsk,
    /// Any other failure, in dockerd's words.
    Fails,
    /// The engine itself did not answer lab, so it could not be asked.
    Unasked,
}

impl Reach {
    /// Whether something answered at that address (a registry or not).
    fn answers(self) -> bool {
        matches!(self, Reach::Answers | Reach::PlainHttp)
    }
}

/// Words only a registry says: its error codes' messages, as dockerd passes them on.
pub(crate) const REGISTRY_WORDS: &[&str] = &[
    "manifest unknown",
    "name unknown",
    "not found",
    "unauthorized",
    "authentication required",
    "no basic auth credentials",
    "access denied",
    "requested access to the resource is denied",
    "toomanyrequests",
];

/// Reads dockerd's error message for `GET /distribution/{reference}/json`.
pub fn interpret(message: &str) -> Reach {
    let m = message.to_ascii_lowercase();
    if m.contains("invalid reference format") || m.contains("no such host") {
        Reach::CannotAsk
    } else if m.contains("server gave http response to https client") {
        Reach::PlainHttp
    } else if m.contains("connection refused") {
        Reach::Refused
    } else if (m.contains("awaiting headers")
        || m.contains("awaiting response headers")
        || m.contains("tls handshake timeout")
        || m.contains("client.timeout exceeded")
        || m.contains("context deadline exceeded"))
        // A connection that never opened ("dial tcp ...: i/o timeout") was not accepted:
        // that one is quoted as it is.
        && !m.contains("dial tcp")
    {
        Reach::Hangs
    } else if REGISTRY_WORDS.iter().any(|w| m.contains(w)) {
        Reach::Answers
    } else {
        Reach::Fails
    }
}

/// One answer: how dockerd fared, and its words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// The address asked for, e.g. `localhost:5000`.
    pub address: String,
    /// What the answer says.
    pub reach: Reach,
    /// dockerd's words, or lab's when dockerd gave none.
    pub words: String,
}

impl Answer {
    /// The answer `reach` with `words`, for `address`.
    pub fn new(address: &str, reach: Reach, words: &str) -> Answer {
        Answer { address: address.into(), reach, words: words.into() }
    }

    /// How the address fares, as the end of a sentence that starts with it.
    fn fares(&self) -> String {
        match self.reach {
            Reach::Answers => "works".into(),
            Reach::PlainHttp => "answers (in plain HTTP, where dockerd spoke TLS)".into(),
            Reach::Hangs => "accepts and never answers".into(),
            Reach::Refused => "refuses connections".into(),
            Reach::CannotAsk | Reach::Fails | Reach::Unasked => format!("fails ({})", self.words),
        }
    }
}

/// Asks the engine to look up [`PROBE_IMAGE`] on the registry at `address`.
pub async fn ask(docker: &Docker, address: &str) -> Answer {
    let reference = format!("{address}/{PROBE_IMAGE}");
    match tokio::time::timeout(ASK_TIMEOUT, docker.inspect_registry_image(&reference, None)).await {
        Ok(Ok(_)) => Answer::new(address, Reach::Answers, &format!("the registry has {reference}")),
        Ok(Err(bollard::errors::Error::DockerResponseServerError { message, .. })) => {
            Answer::new(address, interpret(&message), message.trim())
        }
        // Not dockerd's answer: the engine itself could not be asked.
        Ok(Err(e)) => Answer::new(address, Reach::Unasked, &engine_message(&e)),
        Err(_) => {
            Answer::new(address, Reach::Hangs, &format!("dockerd gave no answer within {}s", ASK_TIMEOUT.as_secs()))
        }
    }
}

/// Asks for `::1` by the first spelling the engine accepts and the node resolves.
pub(crate) async fn ask_ipv6(docker: &Docker) -> Option<Answer> {
    for host in ["[::1]", "ip6-localhost", "localhost6"] {
        let a = ask(docker, &format!("{host}:{PORT}")).await;
        if a.reach != Reach::CannotAsk {
            return Some(a);
        }
    }
    None
}

/// The engine-level check on one node.
#[derive(Debug, Clone, Serialize)]
pub struct EngineCheck {
    /// What dockerd was asked to look up: `localhost:5000/lab-check:none`.
    pub reference: String,
    /// Whether a registry answered.
    pub ok: bool,
    /// How dockerd fared.
    pub reach: Reach,
    /// dockerd's own words (lab's, when dockerd gave none in time).
    pub answer: String,
    /// When it failed: which of `localhost`'s addresses is at fault, from the same question
    /// for `127.0.0.1:5000` and `::1`.
    pub diagnosis: Option<String>,
    /// dockerd's answer for `127.0.0.1:5000`: asked when `localhost` failed, and always by
    /// `up`'s wait for the registry ([`crate::registry::check::wait_ready`]).
    pub ipv4: Option<Answer>,
    /// When it failed: dockerd's answer for `::1` (`[::1]:5000`, or a name the node gives
    /// `::1`), if the engine could be asked.
    pub ipv6: Option<Answer>,
}

impl EngineCheck {
    /// Why the check failed, naming the address family at fault; `None` when it passed.
    pub fn explanation(&self) -> Option<String> {
        if self.ok {
            return None;
        }
        if self.reach == Reach::Unasked {
            return Some(format!("could not ask its dockerd whether it reaches localhost:{PORT}: {}", self.answer));
        }
        let why = self.diagnosis.as_deref().map(|d| format!("{d}; ")).unwrap_or_default();
        Some(format!("dockerd cannot reach localhost:{PORT}: {why}dockerd said: {}", self.answer))
    }

    /// Whether `::1` accepts and never answers while `127.0.0.1` works: the failure of
    /// issue 8, which has a known cause and a workaround.
    pub fn ipv6_hangs(&self) -> bool {
        !self.ok
            && self.ipv4.as_ref().is_some_and(|a| a.reach == Reach::Answers)
            && self.ipv6.as_ref().is_some_and(|a| a.reach == Reach::Hangs)
    }

    /// A check that could not ask the engine at all.
    pub fn unasked(why: String) -> EngineCheck {
        EngineCheck {
            reference: format!("localhost:{PORT}/{PROBE_IMAGE}"),
            ok: false,
            reach: Reach::Unasked,
            answer: why,
            diagnosis: None,
            ipv4: None,
            ipv6: None,
        }
    }
}

/// Asks the engine for `localhost:5000`, and on failure for `127.0.0.1:5000` and `::1` too.
pub async fn check(docker: &Docker) -> EngineCheck {
    let localhost = ask(docker, &format!("localhost:{PORT}")).await;
    let mut check = EngineCheck {
        reference: format!("{}/{PROBE_IMAGE}", localhost.address),
        ok: localhost.reach == Reach::Answers,
        reach: localhost.reach,
        answer: localhost.words.clone(),
        diagnosis: None,
        ipv4: None,
        ipv6: None,
    };
    if check.ok || check.reach == Reach::Unasked {
        return check;
    }
    let ipv4 = format!("127.0.0.1:{PORT}");
    let (v4, v6) = tokio::join!(ask(docker, &ipv4), ask_ipv6(docker));
    check.diagnosis = Some(diagnose(&v4, v6.as_ref()));
    check.ipv4 = Some(v4);
    check.ipv6 = v6;
    check
}

/// Which of `localhost`'s addresses is at fault, from dockerd's answers for `127.0.0.1:5000`
/// and for `::1` (`None`: the engine could not be asked for `::1`).
pub fn diagnose(v4: &Answer, v6: Option<&Answer>) -> String {
    let v4_works = v4.reach == Reach::Answers;
    let ipv6 = format!("[::1]:{PORT}");
    let ipv4 = format!("127.0.0.1:{PORT}");
    match v6 {
        Some(v6) if v4_works && !v6.reach.answers() => format!("{ipv6} {} ({ipv4} works)", v6.fares()),
        Some(v6) if v4_works => {
            format!("{ipv4} works and {ipv6} {}, yet localhost:{PORT} does not", v6.fares())
        }
        None if v4_works => format!(
            "{ipv4} works, so localhost's other address, ::1, is at fault (this engine cannot be asked for \
             {ipv6} directly)"
        ),
        Some(v6) if v6.reach.answers() => format!("{ipv4} {} ({ipv6} {})", v4.fares(), v6.fares()),
        Some(v6) => format!("{ipv4} {} and {ipv6} {}", v4.fares(), v6.fares()),
        None => format!("{ipv4} {}", v4.fares()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dockerd's answers, as Docker 20.10 gave them on a dind node of the test bed.
    #[test]
    fn dockerds_answers_read_as_what_they_say_about_the_address() {
        for (message, want) in [
            // Healthy: the registry answers that it has no such image.
            ("manifest unknown: manifest unknown", Reach::Answers),
            ("unauthorized: authentication required", Reach::Answers),
            ("errors:\ndenied: requested access to the resource is denied\n", Reach::Answers),
            // `[::1]:5000` accepts and never answers; dockerd dials ::1 first for localhost.
            (
                r#"Get "http://localhost:5000/v2/": net/http: request canceled (Client.Timeout exceeded while awaiting headers)"#,
                Reach::Hangs,
            ),
            (
                r#"Get "http://localhost:5000/v2/": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"#,
                Reach::Hangs,
            ),
            // The same, when the request's own deadline fires first (seen in CI on a pull).
            (r#"Get "http://localhost:5000/v2/": context deadline exceeded"#, Reach::Hangs),
            // The same hole asked for by ::1's name: 20.10 speaks TLS to ::1.
            (r#"Get "https://ip6-localhost:5000/v2/": net/http: TLS handshake timeout"#, Reach::Hangs),
            // A plain-HTTP registry on ::1, asked in TLS: ::1 answers.
            (
                r#"Get "https://ip6-localhost:5000/v2/": http: server gave HTTP response to HTTPS client"#,
                Reach::PlainHttp,
            ),
            // Nothing listens.
            (r#"Get "http://localhost:5000/v2/": dial tcp [::1]:5000: connect: connection refused"#, Reach::Refused),
            (
                r#"Get "http://127.0.0.1:5000/v2/": dial tcp 127.0.0.1:5000: connect: connection refused"#,
                Reach::Refused,
            ),
            // What 20.10 cannot be asked.
            ("invalid reference format", Reach::CannotAsk),
            (
                r#"Get "https://localhost6:5000/v2/": dial tcp: lookup localhost6 on 127.0.0.11:53: no such host"#,
                Reach::CannotAsk,
            ),
            // A connection that never opened did not hang after being accepted.
            (
                r#"Get "http://localhost:5000/v2/": dial tcp [::1]:5000: i/o timeout (Client.Timeout exceeded while awaiting headers)"#,
                Reach::Fails,
            ),
            (r#"Get "http://localhost:5000/v2/": dial tcp [::1]:5000: i/o timeout"#, Reach::Fails),
            (r#"Get "http://localhost:5000/v2/": EOF"#, Reach::Fails),
            (r#"Get "https://localhost:5000/v2/": x509: certificate signed by unknown authority"#, Reach::Fails),
        ] {
            assert_eq!(interpret(message), want, "{message}");
        }
    }

    #[test]
    fn the_address_family_at_fault_is_named() {
        let v4_ok = Answer::new("127.0.0.1:5000", Reach::Answers, "manifest unknown: manifest unknown");
        let v4_refused = Answer::new("127.0.0.1:5000", Reach::Refused, "dial tcp 127.0.0.1:5000: connection refused");
        let v6_hangs = Answer::new("ip6-localhost:5000", Reach::Hangs, "net/http: TLS handshake timeout");
        let v6_plain = Answer::new("ip6-localhost:5000", Reach::PlainHttp, "server gave HTTP response to HTTPS client");
        let v6_refused = Answer::new("[::1]:5000", Reach::Refused, "dial tcp [::1]:5000: connection refused");
        assert_eq!(diagnose(&v4_ok, Some(&v6_hangs)), "[::1]:5000 accepts and never answers (127.0.0.1:5000 works)");
        assert_eq!(diagnose(&v4_ok, Some(&v6_refused)), "[::1]:5000 refuses connections (127.0.0.1:5000 works)");
        assert!(diagnose(&v4_ok, None).contains("::1, is at fault"), "{}", diagnose(&v4_ok, None));
        assert!(diagnose(&v4_ok, Some(&v6_plain)).ends_with("yet localhost:5000 does not"));
        assert_eq!(
            diagnose(&v4_refused, Some(&v6_plain)),
            "127.0.0.1:5000 refuses connections ([::1]:5000 answers (in plain HTTP, where dockerd spoke TLS))"
        );
        assert_eq!(
            diagnose(&v4_refused, Some(&v6_refused)),
            "127.0.0.1:5000 refuses connections and [::1]:5000 refuses connections"
        );
        assert_eq!(diagnose(&v4_refused, None), "127.0.0.1:5000 refuses connections");
    }

    #[test]
    fn a_failed_check_explains_itself_in_dockerds_words() {
        let said = r#"Get "http://localhost:5000/v2/": net/http: request canceled (Client.Timeout exceeded while awaiting headers)"#;
        let v4 = Answer::new("127.0.0.1:5000", Reach::Answers, "manifest unknown");
        let v6 = Answer::new("ip6-localhost:5000", Reach::Hangs, "net/http: TLS handshake timeout");
        let check = EngineCheck {
            reference: "localhost:5000/lab-check:none".into(),
            ok: false,
            reach: Reach::Hangs,
            answer: said.into(),
            diagnosis: Some(diagnose(&v4, Some(&v6))),
            ipv4: Some(v4),
            ipv6: Some(v6),
        };
        assert_eq!(
            check.explanation().unwrap(),
            format!(
                "dockerd cannot reach localhost:5000: [::1]:5000 accepts and never answers (127.0.0.1:5000 works); \
                 dockerd said: {said}"
            )
        );
        assert!(check.ipv6_hangs());
        let ok = EngineCheck { ok: true, diagnosis: None, ipv4: None, ipv6: None, ..check };
        assert_eq!(ok.explanation(), None);
        assert!(!ok.ipv6_hangs());
    }
}
