//! Host key verification against an OpenSSH known-hosts file, as `ssh` itself would do it.
//!
//! libssh2 can read known-hosts files, but it gives up on the whole file at the first line it
//! cannot parse (a certificate authority, a key type it lacks), it compares keys without
//! looking at their type (so a host recorded with its ed25519 key but offering ECDSA would
//! look "changed"), and writing back through it would drop the user's comments. So lab reads
//! the file itself, line by line, and uses libssh2 only to match one line's host patterns
//! (plain, `[host]:port` or hashed) and key. New keys are appended as one plain line, the way
//! `ssh` records them. Reads and appends are serialised within the process.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use ssh2::{CheckResult, HashType, KnownHostFileKind, Session};

use crate::config::HostKeyPolicy;

/// The default order of host key algorithms offered, best first.
const DEFAULT_ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ssh-rsa",
];

static FILE_LOCK: Mutex<()> = Mutex::new(());

/// One usable line of a known-hosts file.
struct Entry {
    line_no: usize,
    revoked: bool,
    key_type: String,
    text: String,
}

fn entries(path: &Path) -> std::io::Result<Vec<Entry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut fields = trimmed.split_whitespace();
        let mut first = fields.next().unwrap_or_default();
        let mut revoked = false;
        if first.starts_with('@') {
            // Certificate authorities vouch for keys lab cannot check (it does not do
            // certificates); revoked keys are refused below.
            if first != "@revoked" {
                continue;
            }
            revoked = true;
            first = fields.next().unwrap_or_default();
        }
        let (Some(key_type), Some(_key)) = (fields.next(), fields.next()) else { continue };
        let text =
            if revoked { trimmed.trim_start_matches("@revoked").trim().to_string() } else { trimmed.to_string() };
        let _ = first;
        out.push(Entry { line_no: i + 1, revoked, key_type: key_type.to_string(), text });
    }
    Ok(out)
}

/// How one line relates to a host and key: `None` if the line is about another host (or
/// libssh2 cannot read it), `Some(true)` if it records this key, `Some(false)` another key.
fn line_matches(sess: &Session, entry: &Entry, host: &str, port: u16, key: &[u8]) -> Option<bool> {
    let mut kh = sess.known_hosts().ok()?;
    kh.read_str(&entry.text, KnownHostFileKind::OpenSSH).ok()?;
    // Off port 22 OpenSSH records and looks up only `[host]:port`; libssh2's check_port
    // would also accept a plain `host` line, which is another server's key.
    match kh.check(&pattern(host, port), key) {
        CheckResult::Match => Some(true),
        CheckResult::Mismatch => Some(false),
        CheckResult::NotFound | CheckResult::Failure => None,
    }
}

/// The host key algorithms to offer for `host`: the types already recorded for it first, as
/// OpenSSH does, so that the server shows the key that was recorded.
pub fn algorithm_preference(sess: &Session, path: &Path, host: &str, port: u16) -> String {
    let _guard = FILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut known: Vec<&str> = Vec::new();
    let list = entries(path).unwrap_or_default();
    for e in list.iter().filter(|e| !e.revoked) {
        // Any key that is not the recorded one makes libssh2 report the host as found.
        if line_matches(sess, e, host, port, b"lab-probe").is_some() {
            let algs: &[&str] = match e.key_type.as_str() {
                "ssh-rsa" => &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
                other => DEFAULT_ALGORITHMS.iter().find(|a| **a == other).map(std::slice::from_ref).unwrap_or(&[]),
            };
            for a in algs {
                if !known.contains(a) {
                    known.push(a);
                }
            }
        }
    }
    let rest = DEFAULT_ALGORITHMS.iter().filter(|a| !known.contains(a)).copied();
    known.iter().copied().chain(rest).collect::<Vec<_>>().join(",")
}

/// The OpenSSH pattern a host is recorded under: `host`, or `[host]:port` off port 22.
pub fn pattern(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The key type named inside an SSH public key blob (`ssh-ed25519`, `ssh-rsa`, ...).
fn blob_type(blob: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    std::str::from_utf8(blob.get(4..4 + len)?).ok()
}

/// Checks the key the server presented on `sess` for `host`:`port` (named `name` in the
/// hosts file) against the known-hosts file at `path`. An unknown key is recorded under
/// accept-new and refused under strict; a changed or revoked key is always refused. The
/// error says "host key", names the host and says how to proceed.
pub fn verify(
    sess: &Session,
    path: &Path,
    name: &str,
    host: &str,
    port: u16,
    policy: HostKeyPolicy,
) -> Result<(), String> {
    let (blob, _) = sess.host_key().ok_or("the server sent no host key")?;
    let blob = blob.to_vec();
    let key_type = blob_type(&blob).unwrap_or("unknown").to_string();
    let fingerprint = sess
        .host_key_hash(HashType::Sha256)
        .map(|h| format!("SHA256:{}", base64(h).trim_end_matches('=')))
        .unwrap_or_default();
    let pat = pattern(host, port);
    let _guard = FILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let list = entries(path).map_err(|e| format!("cannot read the known-hosts file {}: {e}", path.display()))?;
    let mut changed = None;
    let mut other_types = Vec::new();
    for e in &list {
        let Some(same) = line_matches(sess, e, host, port, &blob) else { continue };
        if e.revoked {
            if same {
                return Err(format!(
                    "the host key of {name} ({pat}, {key_type} {fingerprint}) is marked @revoked in {} line {}; \
                     lab will not connect to it",
                    path.display(),
                    e.line_no
                ));
            }
            continue;
        }
        if same {
            return Ok(());
        }
        if e.key_type == key_type {
            changed.get_or_insert(e.line_no);
        } else {
            other_types.push(e.key_type.clone());
        }
    }
    if let Some(line) = changed.or_else(|| (!other_types.is_empty()).then_some(0)) {
        let recorded = if line > 0 { format!("line {line}") } else { format!("as {}", other_types.join(", ")) };
        return Err(format!(
            "the host key of {name} ({pat}) has changed: it now presents {key_type} {fingerprint}, which does not \
             match the key recorded in {} {recorded}. The host may have been reinstalled, or someone may be \
             intercepting the connection. Check the new key with the host's administrator; if it is right, \
             remove the old one with `ssh-keygen -R '{pat}' -f {}` and run lab again",
            path.display(),
            path.display(),
        ));
    }
    match policy {
        HostKeyPolicy::Strict => Err(format!(
            "the host key of {name} ({pat}, {key_type} {fingerprint}) is not in {file} and --host-key-policy \
             strict accepts only recorded keys; check the fingerprint, then record it (e.g. `ssh -o \
             UserKnownHostsFile={file} -o StrictHostKeyChecking=accept-new -p {port} {host} true`), or use \
             --host-key-policy accept-new",
            file = path.display()
        )),
        HostKeyPolicy::AcceptNew => {
            append(path, &format!("{pat} {key_type} {}", base64(&blob)))
                .map_err(|e| format!("cannot record the host key of {name} in {}: {e}", path.display()))?;
            tracing::warn!(
                host = name,
                "recorded the new host key {key_type} {fingerprint} of {pat} in {}",
                path.display()
            );
            Ok(())
        }
    }
}

fn append(path: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new().recursive(true).create(dir)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    let mut f = OpenOptions::new().read(true).append(true).create(true).mode(0o600).open(path)?;
    let mut existing = Vec::new();
    f.read_to_end(&mut existing)?;
    let sep = if existing.is_empty() || existing.ends_with(b"\n") { "" } else { "\n" };
    f.write_all(format!("{sep}{line}\n").as_bytes())?;
    f.sync_all()
}

/// Standard base64 with padding (what known-hosts files and fingerprints use).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
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
    fn base64_matches_the_standard() {
        for (raw, enc) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(raw.as_bytes()), enc);
        }
    }

    #[test]
    fn patterns_follow_openssh() {
        assert_eq!(pattern("10.0.0.1", 22), "10.0.0.1");
        assert_eq!(pattern("h", 2222), "[h]:2222");
    }

    #[test]
    fn blob_type_reads_the_key_name() {
        let mut blob = 11u32.to_be_bytes().to_vec();
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&[0, 0, 0, 1, 7]);
        assert_eq!(blob_type(&blob), Some("ssh-ed25519"));
        assert_eq!(blob_type(&[0, 0]), None);
    }

    #[test]
    fn entries_skip_comments_and_authorities_and_keep_revocations() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("known_hosts");
        std::fs::write(
            &f,
            "# comment\n\n@cert-authority *.example.com ssh-ed25519 AAAA\n@revoked h ssh-rsa AAAB\nh ssh-ed25519 AAAC c\nbroken\n",
        )
        .unwrap();
        let e = entries(&f).unwrap();
        assert_eq!(e.len(), 2);
        assert!(e[0].revoked && e[0].text == "h ssh-rsa AAAB" && e[0].line_no == 4);
        assert!(!e[1].revoked && e[1].key_type == "ssh-ed25519" && e[1].line_no == 5);
        assert!(entries(&dir.path().join("absent")).unwrap().is_empty());
    }

    #[test]
    fn append_adds_a_line_and_a_missing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sub/known_hosts");
        append(&f, "a ssh-ed25519 AAAA").unwrap();
        std::fs::write(&f, "a ssh-ed25519 AAAA").unwrap();
        append(&f, "b ssh-ed25519 BBBB").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "a ssh-ed25519 AAAA\nb ssh-ed25519 BBBB\n");
    }
}
