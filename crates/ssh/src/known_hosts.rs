//! Host key verification against OpenSSH known-hosts files, as `ssh` itself does it.
//!
//! libssh2 can read known-hosts files, but it gives up on the whole file at the first line it
//! cannot parse (a certificate authority, a key type it lacks), stops at the first line that
//! matches, compares host names with their case, knows no `*`/`?`/`!` patterns, and writing
//! back through it would drop the user's comments. So lab reads the files itself and gives
//! OpenSSH's verdict (`hostfile.c`): every line whose host patterns match is considered, from
//! the user's file and the global ones (`/etc/ssh/ssh_known_hosts`) alike; a matching
//! `@revoked` line with the presented key refuses it wherever it stands; a matching plain line
//! with the key accepts it; otherwise a matching plain line with another key of the same type
//! means the key changed. `@cert-authority` lines vouch only for certificates, which lab's
//! SSH library never receives, so they never accept a plain key (nor does `ssh`). Host names
//! are compared in lower case, as `ssh` lowercases the host it is given. New keys are
//! appended to the user's file as one plain line, the way `ssh` records them. Reads and
//! appends are serialised within the process.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ssh2::{HashType, Session};

use crate::HostKeyPolicy;

/// The default order of host key algorithms offered, best first (OpenSSH's, without
/// certificates and security keys).
const DEFAULT_ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ssh-rsa",
];

/// Where the global known-hosts files are by default, as in OpenSSH.
pub const GLOBAL_FILES: &[&str] = &["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"];

static FILE_LOCK: Mutex<()> = Mutex::new(());

/// The files host keys are looked up in: the user's, which new keys are added to, and the
/// global ones, which lab only reads.
#[derive(Debug, Clone)]
pub struct KnownHostsFiles {
    /// The user's file (`--known-hosts`, default `~/.ssh/known_hosts`).
    pub user: PathBuf,
    /// Global files (`global_known_hosts`, default [`GLOBAL_FILES`]).
    pub global: Vec<PathBuf>,
}

/// A line's marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    CertAuthority,
    Revoked,
}

/// One usable line of a known-hosts file.
#[derive(Debug)]
struct Entry {
    file: PathBuf,
    line_no: usize,
    marker: Marker,
    hosts: String,
    key_type: String,
    blob: Vec<u8>,
}

impl Entry {
    fn place(&self) -> String {
        format!("{} line {}", self.file.display(), self.line_no)
    }
}

/// The usable lines of `text` (from `file`): lines OpenSSH would skip (comments, unknown
/// markers, keys that are not base64) are skipped.
fn parse(file: &Path, text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut fields = trimmed.split_whitespace();
        let mut first = fields.next().unwrap_or_default();
        let mut marker = Marker::None;
        if first.starts_with('@') {
            marker = match first {
                "@cert-authority" => Marker::CertAuthority,
                "@revoked" => Marker::Revoked,
                _ => continue,
            };
            first = fields.next().unwrap_or_default();
        }
        let (Some(key_type), Some(key)) = (fields.next(), fields.next()) else { continue };
        let Some(blob) = unbase64(key) else { continue };
        if blob_type(&blob) != Some(key_type) {
            continue;
        }
        out.push(Entry {
            file: file.to_path_buf(),
            line_no: i + 1,
            marker,
            hosts: first.to_string(),
            key_type: key_type.to_string(),
            blob,
        });
    }
    out
}

fn read(path: &Path) -> std::io::Result<Vec<Entry>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(parse(path, &t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Every usable line of the user's file, then of the global files. A global file that cannot
/// be read (missing, or not readable by this user) is skipped, as `ssh` skips it.
fn entries(files: &KnownHostsFiles) -> Result<Vec<Entry>, String> {
    let mut out =
        read(&files.user).map_err(|e| format!("cannot read the known-hosts file {}: {e}", files.user.display()))?;
    for g in &files.global {
        out.extend(read(g).unwrap_or_default());
    }
    Ok(out)
}

/// OpenSSH's `match_pattern`: `*` is any run of characters, `?` any one.
fn glob(pattern: &[u8], s: &[u8]) -> bool {
    match pattern.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

/// Whether a line's host field names `host` (already lower case, and `[host]:port` off port
/// 22): a hashed name (`|1|salt|hash`), or a comma-separated list of patterns in which a
/// matching negated pattern (`!pattern`) excludes the host whatever else matches.
fn host_matches(field: &str, host: &str) -> bool {
    if let Some(hashed) = field.strip_prefix("|1|") {
        let Some((salt, hash)) = hashed.split_once('|') else { return false };
        let (Some(salt), Some(hash)) = (unbase64(salt), unbase64(hash)) else { return false };
        return hmac_sha1(&salt, host.as_bytes()).as_slice() == hash.as_slice();
    }
    let mut matched = false;
    for p in field.split(',') {
        let (negated, p) = match p.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, p),
        };
        if glob(p.to_ascii_lowercase().as_bytes(), host.as_bytes()) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// The lookup name OpenSSH uses: the host in lower case, as `[host]:port` off port 22.
fn lookup(host: &str, port: u16) -> String {
    pattern(&host.to_ascii_lowercase(), port)
}

/// Keys of one family compare with each other: OpenSSH treats every ECDSA curve as one type.
fn family(key_type: &str) -> &str {
    if key_type.starts_with("ecdsa-sha2-") {
        "ecdsa"
    } else {
        key_type
    }
}

/// What the known-hosts files say of a key.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// A matching plain line records this key.
    Accept,
    /// No matching plain line records a key of this type. `others` are the places of
    /// matching lines that record keys of other types.
    Unknown { others: Vec<String> },
    /// A matching line of the same type records another key (the place of the first).
    Changed { at: String },
    /// A matching `@revoked` line names this key.
    Revoked { at: String },
}

impl Verdict {
    fn word(&self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Unknown { .. } => "unknown",
            Verdict::Changed { .. } => "changed",
            Verdict::Revoked { .. } => "revoked",
        }
    }
}

/// OpenSSH's `check_key_in_hostkeys` over every line that matches `host` (lookup form).
fn judge(list: &[Entry], host: &str, blob: &[u8]) -> Verdict {
    let matching: Vec<&Entry> = list.iter().filter(|e| host_matches(&e.hosts, host)).collect();
    if let Some(e) = matching.iter().find(|e| e.marker == Marker::Revoked && e.blob == blob) {
        return Verdict::Revoked { at: e.place() };
    }
    let plain: Vec<&&Entry> = matching.iter().filter(|e| e.marker == Marker::None).collect();
    if plain.iter().any(|e| e.blob == blob) {
        return Verdict::Accept;
    }
    let ty = blob_type(blob).unwrap_or_default();
    if let Some(e) = plain.iter().find(|e| family(&e.key_type) == family(ty)) {
        return Verdict::Changed { at: e.place() };
    }
    Verdict::Unknown { others: plain.iter().map(|e| format!("{} ({})", e.place(), e.key_type)).collect() }
}

/// [`judge`] for `host` on `port`, as `ssh` does it without `HostKeyAlias`: off port 22, a
/// key unknown under `[host]:port` is accepted if a line for the plain host records exactly
/// this key (OpenSSH's "found matching key w/out port"); a changed or revoked key there
/// does not make it worse than unknown.
fn judge_host(list: &[Entry], host: &str, port: u16, blob: &[u8]) -> Verdict {
    let v = judge(list, &lookup(host, port), blob);
    if port != 22 && matches!(v, Verdict::Unknown { .. }) && judge(list, &lookup(host, 22), blob) == Verdict::Accept {
        return Verdict::Accept;
    }
    v
}

/// The host key algorithms to offer for `host`: those of the keys recorded for it first, in
/// the default order, as OpenSSH does, so that the server shows a key that was recorded.
pub fn algorithm_preference(files: &KnownHostsFiles, host: &str, port: u16) -> String {
    let _guard = FILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let list = entries(files).unwrap_or_default();
    let host = lookup(host, port);
    let recorded: Vec<&str> = list
        .iter()
        .filter(|e| e.marker == Marker::None && host_matches(&e.hosts, &host))
        .map(|e| e.key_type.as_str())
        .collect();
    let has = |alg: &str| recorded.iter().any(|t| *t == alg || (*t == "ssh-rsa" && alg.starts_with("rsa-sha2-")));
    let first = DEFAULT_ALGORITHMS.iter().filter(|a| has(a));
    let rest = DEFAULT_ALGORITHMS.iter().filter(|a| !has(a));
    first.chain(rest).copied().collect::<Vec<_>>().join(",")
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
/// hosts file) against the known-hosts files. A revoked or changed key is always refused; an
/// unknown key is refused under strict, and under accept-new recorded in the user's file,
/// unless a line for the host records a key of another type (`ssh` would ask; lab, which
/// cannot, refuses). The error says "host key", names the host and says how to proceed.
pub fn verify(
    sess: &Session,
    files: &KnownHostsFiles,
    name: &str,
    host: &str,
    port: u16,
    policy: HostKeyPolicy,
) -> Result<(), String> {
    let (blob, _) = sess.host_key().ok_or("the server sent no host key")?;
    let blob = blob.to_vec();
    let fingerprint = sess
        .host_key_hash(HashType::Sha256)
        .map(|h| format!("SHA256:{}", base64(h).trim_end_matches('=')))
        .unwrap_or_default();
    let _guard = FILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let list = entries(files)?;
    let key = Presented { name, host, port, blob: &blob, fingerprint: &fingerprint };
    let Some(line) = decide(&list, files, &key, policy)? else { return Ok(()) };
    let user = files.user.display();
    append(&files.user, &line).map_err(|e| format!("cannot record the host key of {name} in {user}: {e}"))?;
    let key_type = blob_type(&blob).unwrap_or("unknown");
    tracing::warn!(
        host = name,
        "recorded the new host key {key_type} {fingerprint} of {} in {user}",
        lookup(host, port)
    );
    Ok(())
}

/// A host key as a server presented it.
struct Presented<'a> {
    /// The host's name in the hosts file.
    name: &'a str,
    /// The address it is looked up under.
    host: &'a str,
    port: u16,
    blob: &'a [u8],
    /// `SHA256:...`, as `ssh` shows it.
    fingerprint: &'a str,
}

/// What to do with `key` given the known-hosts lines `list`: accept it (`None`), record it
/// (the line to append to the user's file), or refuse it. A refusal starts with its cause in
/// a few words ("host key revoked", "host key changed", "host key unknown"), since messages
/// that report a host out of reach (`lab status` among them) quote it, and the cause is what
/// the user acts on.
fn decide(
    list: &[Entry],
    files: &KnownHostsFiles,
    key: &Presented<'_>,
    policy: HostKeyPolicy,
) -> Result<Option<String>, String> {
    let Presented { name, host, port, blob, fingerprint } = *key;
    let key_type = blob_type(blob).unwrap_or("unknown");
    // As `ssh` records and looks up names: in lower case.
    let pat = lookup(host, port);
    let user = files.user.display();
    let changed = |recorded: String| {
        format!(
            "host key changed: {name} ({pat}) now presents {key_type} {fingerprint}, which does not match the key \
             recorded in {recorded}. The host may have been reinstalled, or someone may be intercepting the \
             connection. Check the new key with the host's administrator; if it is right, remove the old one \
             with `ssh-keygen -R '{pat}' -f {user}` and run lab again"
        )
    };
    match judge_host(list, host, port, blob) {
        Verdict::Accept => Ok(None),
        Verdict::Revoked { at } => Err(format!(
            "host key revoked: {name} ({pat}) presents {key_type} {fingerprint}, which {at} marks @revoked; lab \
             will not connect to it"
        )),
        Verdict::Changed { at } => Err(changed(at)),
        Verdict::Unknown { others } if policy == HostKeyPolicy::AcceptNew && !others.is_empty() => {
            Err(changed(others.join(", ")))
        }
        Verdict::Unknown { .. } => match policy {
            HostKeyPolicy::Strict => Err(format!(
                "host key unknown: {name} ({pat}) presents {key_type} {fingerprint}, which is not in {user} (nor \
                 in a global known-hosts file), and --host-key-policy strict accepts only recorded keys; check \
                 the fingerprint, then record it (e.g. `ssh -o UserKnownHostsFile={user} -o \
                 StrictHostKeyChecking=accept-new -p {port} {host} true`), or use --host-key-policy accept-new"
            )),
            HostKeyPolicy::AcceptNew => Ok(Some(format!("{pat} {key_type} {}", base64(blob)))),
        },
    }
}

/// Connects to `address`:`port` and judges the key it presents for `name`, writing nothing
/// (lab's end-to-end suite compares this verdict with OpenSSH's).
pub fn probe(
    address: &str,
    port: u16,
    name: &str,
    files: &KnownHostsFiles,
    timeout: std::time::Duration,
) -> Result<&'static str, String> {
    use std::net::ToSocketAddrs;
    let addr = (address, port).to_socket_addrs().map_err(|e| e.to_string())?.next().ok_or("no address")?;
    let tcp = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    let mut sess = Session::new().map_err(|e| e.to_string())?;
    sess.set_tcp_stream(tcp);
    sess.set_timeout(timeout.as_millis() as u32);
    let _ = sess.method_pref(ssh2::MethodType::HostKey, &algorithm_preference(files, name, port));
    sess.handshake().map_err(|e| e.to_string())?;
    let (blob, _) = sess.host_key().ok_or("the server sent no host key")?;
    let _guard = FILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let list = entries(files)?;
    // With a name other than the address, `ssh` would be given `HostKeyAlias`, which it looks
    // up as is, without the port fallback.
    let v = if name == address { judge_host(&list, name, port, blob) } else { judge(&list, &lookup(name, port), blob) };
    Ok(v.word())
}

/// `pub_keys` (public keys as `*.pub` files hold them: `TYPE BASE64 [COMMENT]`, one a line)
/// as known-hosts lines for `host` on port 22. Anything that is not a key lab can read is left
/// out, comments too.
pub fn lines_for(host: &str, pub_keys: &str) -> Vec<String> {
    let pat = lookup(host, 22);
    let mut out: Vec<String> = Vec::new();
    for line in pub_keys.lines() {
        let mut f = line.split_whitespace();
        let (Some(key_type), Some(key)) = (f.next(), f.next()) else { continue };
        let valid = unbase64(key).is_some_and(|blob| blob_type(&blob) == Some(key_type));
        let line = format!("{pat} {key_type} {key}");
        if valid && !out.contains(&line) {
            out.push(line);
        }
    }
    out
}

/// A known-hosts file of lab's own that could not be read or written, with the OS's error
/// (or lab's, for a write) kept as the cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// Reading `file` failed.
    #[error("cannot read the known-hosts file {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing `file` (or making its directory) failed.
    #[error("{source}")]
    Write {
        /// The file.
        file: PathBuf,
        /// Why: lab's state error, which names the file (boxed: it is large).
        #[source]
        source: Box<lab_core::Error>,
    },
}

/// Whether a plain line of the user's file records a key for `host` on port 22.
pub fn records(file: &Path, host: &str) -> Result<bool, FileError> {
    let _guard = FILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let list = read(file).map_err(|e| FileError::Read { file: file.into(), source: e })?;
    let pat = lookup(host, 22);
    Ok(list.iter().any(|e| e.marker == Marker::None && host_matches(&e.hosts, &pat)))
}

/// Makes `lines` the only lines for exactly `host` in `file` (a file of lab's own, made 0600
/// if missing and replaced atomically): lines whose host field is `host` alone go, every
/// other line stays as it is. With no `lines`, `host` is forgotten.
pub fn set_host(file: &Path, host: &str, lines: &[String]) -> Result<(), FileError> {
    let _guard = FILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(FileError::Read { file: file.into(), source: e }),
    };
    if text.is_empty() && lines.is_empty() {
        return Ok(());
    }
    let pat = lookup(host, 22);
    let mut out: String = text
        .lines()
        .filter(|l| l.split_whitespace().next().map(str::to_ascii_lowercase) != Some(pat.clone()))
        .map(|l| format!("{l}\n"))
        .collect();
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        lab_core::state::make_private_dir(dir)
            .map_err(|e| FileError::Write { file: file.into(), source: Box::new(e) })?;
    }
    lab_core::state::write_atomic(file, out.as_bytes())
        .map_err(|e| FileError::Write { file: file.into(), source: Box::new(e) })
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

/// Standard base64 with padding (what known-hosts files and fingerprints use); padding is
/// optional when reading, as OpenSSH reads it.
const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// `data` in standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    use base64::Engine;
    B64.encode(data)
}

/// Standard base64 decoding (padding optional); `None` if `s` is not base64.
fn unbase64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    B64.decode(s).ok()
}

/// HMAC-SHA1 of `data` keyed with `key`: a hashed known-hosts name (`|1|salt|hash`) is the
/// HMAC of the name keyed with the line's salt. Only that: these hashes hide names from a
/// reader, they protect nothing else, hence SHA-1.
fn hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    ring::hmac::sign(&key, data).as_ref().to_vec()
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

    /// A key blob of type `ty` with one byte of key material.
    fn key(ty: &str, n: u8) -> (String, Vec<u8>) {
        let mut blob = (ty.len() as u32).to_be_bytes().to_vec();
        blob.extend_from_slice(ty.as_bytes());
        blob.extend_from_slice(&[0, 0, 0, 1, n]);
        (format!("{ty} {}", base64(&blob)), blob)
    }

    #[test]
    fn entries_skip_comments_unknown_markers_and_bad_keys_and_keep_markers() {
        let (k, _) = key("ssh-ed25519", 1);
        let text = format!(
            "# comment\n\n@cert-authority *.example.com {k}\n@revoked h {k}\nh {k} c\nbroken\n@bogus h {k}\nh ssh-rsa !!\n"
        );
        let e = parse(Path::new("f"), &text);
        assert_eq!(
            e.iter().map(|e| (e.line_no, e.marker)).collect::<Vec<_>>(),
            [(3, Marker::CertAuthority), (4, Marker::Revoked), (5, Marker::None)]
        );
        assert_eq!(e[1].hosts, "h");
        assert_eq!(e[2].place(), "f line 5");
    }

    #[test]
    fn host_patterns_follow_openssh() {
        assert!(host_matches("node1.example.com", "node1.example.com"));
        assert!(host_matches("Node1.Example.COM", "node1.example.com"));
        assert!(host_matches("a,node1.example.com", "node1.example.com"));
        assert!(host_matches("*.example.com", "node1.example.com"));
        assert!(host_matches("node?.example.com", "node1.example.com"));
        assert!(!host_matches("node?.example.com", "node10.example.com"));
        assert!(!host_matches("!node1.example.com,*.example.com", "node1.example.com"));
        assert!(host_matches("!node2.example.com,*.example.com", "node1.example.com"));
        assert!(!host_matches("!node1.example.com", "node1.example.com"));
        assert!(host_matches("[10.0.0.1]:2222", "[10.0.0.1]:2222"));
        assert!(!host_matches("10.0.0.1", "[10.0.0.1]:2222"));
        assert!(host_matches("*", "[10.0.0.1]:2222"));
        // `ssh-keygen -H` of "node1.example.com", salt and hash as it wrote them.
        let hashed = format!(
            "|1|{}|{}",
            base64(b"0123456789abcdefghij"),
            base64(&hmac_sha1(b"0123456789abcdefghij", b"node1.example.com"))
        );
        assert!(host_matches(&hashed, "node1.example.com"));
        assert!(!host_matches(&hashed, "node2.example.com"));
        assert_eq!(lookup("Node1.Example.com", 22), "node1.example.com");
        assert_eq!(lookup("H", 2222), "[h]:2222");
    }

    #[test]
    fn hmac_and_base64_match_their_standards() {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        // RFC 2202 test cases 2 and 6 (a key longer than the block).
        assert_eq!(
            hex(&hmac_sha1(&[0xaa; 80], b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112"
        );
        assert_eq!(
            hex(&hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert_eq!(unbase64("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(unbase64("Zm8=").unwrap(), b"fo");
        assert_eq!(unbase64("Zm8").unwrap(), b"fo");
        assert!(unbase64("Zm8*").is_none());
    }

    #[test]
    fn every_matching_line_counts_and_revoked_wins() {
        let (mine, blob) = key("ssh-ed25519", 1);
        let (other, _) = key("ssh-ed25519", 2);
        let (rsa, _) = key("ssh-rsa", 3);
        let judge_text = |text: &str| judge(&parse(Path::new("kh"), text), "h", &blob);
        assert_eq!(judge_text(&format!("h {mine}\n")), Verdict::Accept);
        assert_eq!(judge_text(&format!("h {mine}\n@revoked * {mine}\n")), Verdict::Revoked { at: "kh line 2".into() });
        assert_eq!(judge_text(&format!("@revoked other {mine}\nh {mine}\n")), Verdict::Accept);
        assert_eq!(judge_text(&format!("h {other}\nh {mine}\n")), Verdict::Accept);
        assert_eq!(judge_text(&format!("h {other}\n")), Verdict::Changed { at: "kh line 1".into() });
        assert_eq!(judge_text(&format!("@cert-authority * {mine}\n")), Verdict::Unknown { others: vec![] });
        assert_eq!(judge_text(&format!("h {rsa}\n")), Verdict::Unknown { others: vec!["kh line 1 (ssh-rsa)".into()] });
        assert_eq!(judge_text(""), Verdict::Unknown { others: vec![] });
        // Off port 22, a plain line with exactly this key is enough; another key there is not.
        let list = |text: String| parse(Path::new("kh"), &text);
        assert_eq!(judge_host(&list(format!("h {mine}\n")), "H", 2222, &blob), Verdict::Accept);
        assert!(matches!(judge_host(&list(format!("h {other}\n")), "h", 2222, &blob), Verdict::Unknown { .. }));
        assert!(matches!(
            judge_host(&list(format!("[h]:2222 {other}\nh {mine}\n")), "h", 2222, &blob),
            Verdict::Changed { .. }
        ));
    }

    /// Issue 18, item 16: a refused key says why in its first words, which `lab status`
    /// and every other report of the host out of reach quote.
    #[test]
    fn refusals_start_with_their_cause() {
        let (mine, blob) = key("ssh-ed25519", 1);
        let (other, _) = key("ssh-ed25519", 2);
        let files = KnownHostsFiles { user: "/k/known_hosts".into(), global: vec![] };
        let presented = Presented { name: "node1", host: "10.0.0.1", port: 22, blob: &blob, fingerprint: "SHA256:x" };
        let decide_text = |text: &str, policy| decide(&parse(Path::new("kh"), text), &files, &presented, policy);
        let revoked = decide_text(&format!("10.0.0.1 {mine}\n@revoked * {mine}\n"), HostKeyPolicy::AcceptNew);
        let revoked = revoked.unwrap_err();
        assert!(revoked.starts_with("host key revoked: node1 (10.0.0.1)"), "{revoked}");
        assert!(revoked.contains("kh line 2") && revoked.contains("SHA256:x"), "{revoked}");
        let changed = decide_text(&format!("10.0.0.1 {other}\n"), HostKeyPolicy::AcceptNew).unwrap_err();
        assert!(changed.starts_with("host key changed: node1 (10.0.0.1)"), "{changed}");
        assert!(changed.contains("ssh-keygen -R '10.0.0.1' -f /k/known_hosts"), "{changed}");
        let unknown = decide_text("", HostKeyPolicy::Strict).unwrap_err();
        assert!(unknown.starts_with("host key unknown: node1 (10.0.0.1)") && unknown.contains("strict"), "{unknown}");
        assert_eq!(decide_text(&format!("10.0.0.1 {mine}\n"), HostKeyPolicy::Strict), Ok(None));
        let line = decide_text("", HostKeyPolicy::AcceptNew).unwrap().expect("recorded");
        assert_eq!(line, format!("10.0.0.1 {mine}"));
    }

    #[test]
    fn an_unknown_key_is_refused_under_accept_new_when_another_type_is_recorded() {
        // The policy's decision, without a session: a recorded key of another type is not
        // silently joined by a new one.
        let (rsa, _) = key("ssh-rsa", 3);
        let (_, blob) = key("ssh-ed25519", 1);
        let v = judge(&parse(Path::new("kh"), &format!("h {rsa}\n")), "h", &blob);
        assert!(matches!(v, Verdict::Unknown { ref others } if !others.is_empty()));
    }

    #[test]
    fn algorithms_of_recorded_keys_come_first_in_the_default_order() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("kh");
        let global = dir.path().join("global");
        let (rsa, _) = key("ssh-rsa", 3);
        let (ec, _) = key("ecdsa-sha2-nistp256", 4);
        std::fs::write(&user, format!("h {rsa}\n@revoked h {ec}\n")).unwrap();
        std::fs::write(&global, format!("H {ec}\n")).unwrap();
        let files = KnownHostsFiles { user, global: vec![global] };
        assert!(algorithm_preference(&files, "h", 22)
            .starts_with("ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256,ssh-rsa,ssh-ed25519"));
        assert!(algorithm_preference(&files, "x", 22).starts_with("ssh-ed25519,"));
    }

    #[test]
    fn a_hosts_lines_are_set_and_forgotten_leaving_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sub/known_hosts");
        let (ed, blob) = key("ssh-ed25519", 1);
        let (ec, _) = key("ecdsa-sha2-nistp256", 2);
        let lines = lines_for("C-Manager", &format!("{ed} root@vm\n{ec}\nnot a key\nssh-rsa !!\n{ed}\n"));
        assert_eq!(lines, [format!("c-manager {ed}"), format!("c-manager {ec}")]);
        assert!(!records(&f, "c-manager").unwrap());
        set_host(&f, "c-manager", &lines).unwrap();
        set_host(&f, "c-worker1", &lines_for("c-worker1", &ed)).unwrap();
        assert!(records(&f, "c-manager").unwrap());
        let list = parse(&f, &std::fs::read_to_string(&f).unwrap());
        assert_eq!(judge(&list, "c-worker1", &blob), Verdict::Accept);
        // A new machine of the same name: its keys replace the old ones, the others stay.
        let (other, _) = key("ssh-ed25519", 3);
        set_host(&f, "c-manager", &lines_for("c-manager", &other)).unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert_eq!(text, format!("c-worker1 {ed}\nc-manager {other}\n"));
        set_host(&f, "c-manager", &[]).unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), format!("c-worker1 {ed}\n"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600);
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
