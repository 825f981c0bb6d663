//! External processes under test: finding the tool (or failing with one line naming
//! `scripts/setup.sh`), killing the process when the test ends however it ends, and learning the
//! port it listens on without choosing a "free" port in advance.
//!
//! How each server gets its port:
//! - The sidecar (in-process or `authsidecar run`), the mock provider, the test's own upstreams,
//!   `openssl s_server` (`-accept 127.0.0.1:0`, then its `ACCEPT host:port` line) and ChromeDriver
//!   (`--port=0`, then its "started successfully on port N" line) bind port 0 and report the
//!   address they got. The sidecar's auth listener does too: `public_url = "http://127.0.0.1:0"`
//!   stands for the port the listener was given.
//! - redis-server and tinyproxy cannot report a port they chose (redis-server `--port 0` turns TCP
//!   off; tinyproxy refuses `Port 0`), and the store only takes `redis://host:port` URLs, so they
//!   get a port from [`spare_port`]: a random one *below* the kernel's ephemeral range, which
//!   port-0 binds (every other listener in the suite) never hand out. Something else on the host
//!   can still hold it; the process then exits saying so ("Address already in use"), and
//!   [`until_ready`] reports that, so the caller starts it again on another spare port (a bounded
//!   number of times). Readiness is the process's own "ready" line, never a successful connect,
//!   which another listener on the same port could also answer.

use std::collections::HashSet;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where the tests look for tools besides `PATH`.
const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/usr/lib/chromium"];

/// The line a test fails with when a tool it needs is missing.
pub fn not_installed(tool: &str) -> String {
    format!("{tool} is not installed: run scripts/setup.sh")
}

/// The path of the program `name` (on `PATH`, in /usr/sbin or /usr/lib/chromium); a test that
/// needs it and does not find it fails with one line naming scripts/setup.sh.
#[track_caller]
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    match found {
        Some(p) => p,
        None => panic!("{}", not_installed(name)),
    }
}

/// The first of `paths` that exists (a library such as libfaketime), or the one-line failure
/// naming `tool` and scripts/setup.sh.
#[track_caller]
pub fn tool_file(tool: &str, paths: &[&str]) -> PathBuf {
    match paths.iter().map(PathBuf::from).find(|p| p.exists()) {
        Some(p) => p,
        None => panic!("{}", not_installed(tool)),
    }
}

/// A child process that is killed (and reaped) when this is dropped: at the end of a test, or
/// when a failing test unwinds.
pub struct Proc {
    child: Child,
    /// What it is, for messages.
    pub name: String,
}

impl Proc {
    /// Spawns `cmd`; `name` is the tool, for the message should it not start.
    #[track_caller]
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("{}", not_installed(name))
            }
            Err(e) => panic!("{name} did not start: {e}"),
        };
        Proc {
            child,
            name: name.to_string(),
        }
    }

    /// SIGKILL and reap (nothing when it already ended).
    pub fn kill(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Ports handed out by [`spare_port`] in this test process, so two tests never try the same one.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// The lowest port [`spare_port`] hands out.
const SPARE_FROM: u16 = 10_000;

/// The first port of the kernel's ephemeral range (what port-0 binds draw from).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A random port for a tool that must be told its port (see the module's notes), with
/// `port + offset` free of port-0 binds too (Redis Cluster's bus port is `port + 10000`): below the
/// ephemeral range, never the same twice in this process. Not checked by binding it: the tool's
/// own bind is the check, and [`until_ready`] reports a port that was taken.
pub fn spare_port(offset: u16) -> u16 {
    let top = ephemeral_start().saturating_sub(offset);
    // A host whose ephemeral range starts low leaves no such room: any port then, still checked
    // by the tool's own bind.
    let (from, to) = if top > SPARE_FROM + 1000 {
        (SPARE_FROM, top)
    } else {
        (SPARE_FROM, SPARE_FROM + 10_000)
    };
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    loop {
        let port = rand::Rng::gen_range(&mut rand::thread_rng(), from..to);
        if handed.insert(port) {
            return port;
        }
    }
}

/// What [`until_ready`] found.
#[derive(Debug)]
pub enum Ready {
    /// The ready line appeared.
    Up,
    /// The process exited because its port was taken; carries its output. Start it again on
    /// another port.
    PortTaken(String),
}

/// Waits (at most `within`) until one of `outputs` (files the process writes) contains `ready`.
/// A process that exits first with `port_taken` in its output is [`Ready::PortTaken`]; one that
/// exits otherwise, or is not ready in time, fails the test with its output.
pub async fn until_ready(
    p: &mut Proc,
    outputs: &[&Path],
    ready: &str,
    port_taken: &str,
    within: Duration,
) -> Ready {
    let read = || -> String {
        outputs
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let deadline = Instant::now() + within;
    loop {
        let text = read();
        if text.contains(ready) {
            return Ready::Up;
        }
        if let Ok(Some(status)) = p.try_wait() {
            // Its last words may land after the exit is seen.
            let text = read();
            if text.contains(port_taken) {
                return Ready::PortTaken(text);
            }
            panic!(
                "{} exited ({status}) before printing {ready:?}:\n{text}",
                p.name
            );
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {within:?} waiting for {} to print {ready:?}:\n{text}",
                p.name
            );
        }
        tokio::time::sleep(super::wait::POLL).await;
    }
}

/// Waits (at most `within`) for a line of `output` (a file `p` writes) that contains `marker`, and
/// returns what follows the marker on that line. Fails with the output if `p` exits first.
pub async fn printed_after(p: &mut Proc, output: &Path, marker: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(output).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(marker)) {
            let at = line.find(marker).unwrap_or(0) + marker.len();
            return line[at..].to_string();
        }
        if let Ok(Some(status)) = p.try_wait() {
            panic!(
                "{} exited ({status}) before printing {marker:?}:\n{text}",
                p.name
            );
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {within:?} waiting for {} to print {marker:?}:\n{text}",
                p.name
            );
        }
        tokio::time::sleep(super::wait::POLL).await;
    }
}

/// Runs the Python verifier `script` (under `tests/verify/`, with the `.venv` that
/// `scripts/setup.sh` installs) as a server with `args`, and returns it with the port it printed on
/// its first line (`listening on PORT`).
pub fn python_server(script: &str, args: &[&std::ffi::OsStr]) -> (Proc, u16) {
    use std::io::BufRead;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = repo.join(".venv/bin/python3");
    assert!(
        python.exists(),
        "Python verifiers are not installed (no .venv): run scripts/setup.sh"
    );
    let mut p = Proc::spawn(
        "python3",
        Command::new(&python)
            .arg(repo.join("tests/verify").join(script))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit()),
    );
    let mut line = String::new();
    if let Some(out) = p.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    let port = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("{script} did not start: {line:?}"));
    (p, port)
}

/// Runs the certified OpenID provider (node oidc-provider, `tests/verify/oidc/provider.mjs`) with
/// `clients`, signing the account `sign_in` in when given (see the script). Its output goes to
/// `dir/out.log` (read for its `ISSUED` and `ERROR` lines) and `dir/err.log`. Returns it with its
/// port.
pub async fn oidc_provider(
    dir: &Path,
    clients: &serde_json::Value,
    sign_in: Option<&str>,
) -> (Proc, u16) {
    let node = tool("node");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/verify/oidc");
    if !script
        .join("node_modules/oidc-provider/package.json")
        .exists()
    {
        panic!("{}", not_installed("oidc-provider (npm)"));
    }
    let out = dir.join("out.log");
    let mut cmd = Command::new(node);
    cmd.arg(script.join("provider.mjs"))
        .current_dir(&script)
        .env("OIDC_CLIENTS", clients.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(dir.join("err.log")).unwrap());
    if let Some(account) = sign_in {
        cmd.env("OIDC_SIGN_IN", account);
    }
    let mut p = Proc::spawn("node", &mut cmd);
    let port = printed_after(&mut p, &out, "LISTENING ", Duration::from_secs(30))
        .await
        .trim()
        .parse()
        .unwrap();
    (p, port)
}
