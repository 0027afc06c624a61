//! The real release binary, run as a server and as CLI commands, and a minimal HTTP/1.1
//! client (a fresh loopback connection per request, `Connection: close`) so the same client
//! times every route and its baseline.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every child process and scratch thing to remove, whatever way the run ends.
#[derive(Default)]
pub struct Cleanup {
    pub pids: Vec<u32>,
    pub dirs: Vec<PathBuf>,
    /// (admin URL, database name) of PostgreSQL scratch databases.
    pub pg: Vec<(String, String)>,
}

pub type Registry = Arc<Mutex<Cleanup>>;

pub fn lock(r: &Registry) -> std::sync::MutexGuard<'_, Cleanup> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// SIGTERM `pid` (through kill(1): this crate forbids `unsafe`, so no libc).
fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Stop every registered process and remove every scratch directory (PostgreSQL databases
/// are dropped by the caller, which has a runtime).
pub fn kill_all(r: &Registry) {
    let (pids, dirs) = {
        let mut c = lock(r);
        (std::mem::take(&mut c.pids), std::mem::take(&mut c.dirs))
    };
    for pid in pids {
        terminate(pid);
        // A server that ignores SIGTERM for 5 s is killed.
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while proc_dir.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if proc_dir.exists() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
    }
    for dir in dirs {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// How the binary is run: which database, from which directory (the PostgreSQL development
/// key lives in the working directory).
#[derive(Clone)]
pub struct Target {
    pub bin: PathBuf,
    pub database_url: String,
    pub cwd: PathBuf,
}

impl Target {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(&self.cwd)
            .env("DATABASE_URL", &self.database_url)
            .env("RUST_LOG", "warn")
            .env_remove("APP_ENV")
            .env_remove("API_TOKEN_PREFIX_ENV")
            .env_remove("BIND_ADDR")
            .stdin(Stdio::null());
        cmd
    }

    /// Run a CLI command to completion: (elapsed, stdout). A non-zero exit is an error
    /// carrying its standard error.
    pub fn cli(&self, args: &[&str]) -> Result<(Duration, String), String> {
        let start = Instant::now();
        let out = self
            .command()
            .args(args)
            .output()
            .map_err(|e| format!("running {} {}: {e}", self.bin.display(), args.join(" ")))?;
        let elapsed = start.elapsed();
        if !out.status.success() {
            return Err(format!(
                "tokenledger {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok((elapsed, String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    /// A development admin session for this database (made before `serve` starts, which
    /// loads the key once).
    pub fn dev_session(&self) -> Result<String, String> {
        let (_, out) = self.cli(&["dev-session", "--sub", "bench", "--role", "admin"])?;
        let jwt = out.trim().to_owned();
        if jwt.split('.').count() != 3 {
            return Err("dev-session printed no JWT".into());
        }
        Ok(jwt)
    }

    /// Start `tokenledger serve` on a free loopback port and wait until `GET /readyz`
    /// answers 200. Returns the server and how long that took from spawning it.
    pub fn serve(&self, registry: &Registry, log: &Path) -> Result<(Server, Duration), String> {
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log_file = std::fs::File::create(log).map_err(|e| format!("server log: {e}"))?;
        let err_file = log_file
            .try_clone()
            .map_err(|e| format!("server log: {e}"))?;
        let start = Instant::now();
        let child = self
            .command()
            .arg("serve")
            .env("BIND_ADDR", addr.to_string())
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.bin.display()))?;
        lock(registry).pids.push(child.id());
        let mut server = Server {
            child,
            addr,
            registry: registry.clone(),
        };
        let deadline = start + Duration::from_secs(900);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let tail = std::fs::read_to_string(log).unwrap_or_default();
                return Err(format!(
                    "the server exited ({status}) before /readyz answered; its log:\n{}",
                    last_lines(&tail, 20)
                ));
            }
            if let Ok(r) = get(addr, "/readyz", None, Duration::from_secs(5))
                && r.status == 200
            {
                return Ok((server, start.elapsed()));
            }
            if Instant::now() > deadline {
                return Err("the server was not ready within 900 s".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}

/// A running `tokenledger serve`; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    registry: Registry,
}

/// Memory of a process, from `/proc/<pid>/status`, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

impl Server {
    pub fn memory(&self) -> Result<Memory, String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .map_err(|e| format!("reading the server's /proc status: {e}"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(Memory {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
        })
    }

    pub fn get(&self, path: &str, bearer: Option<&str>) -> Result<Response, String> {
        get(self.addr, path, bearer, Duration::from_secs(300))
    }

    pub fn post(&self, path: &str, bearer: &str, json: &str) -> Result<Response, String> {
        request(
            self.addr,
            "POST",
            path,
            Some(bearer),
            Some(json),
            Duration::from_secs(60),
        )
    }

    /// Stop it the way an operator does: SIGTERM, then wait.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        let pid = self.child.id();
        if let Ok(None) = self.child.try_wait() {
            terminate(pid);
            let deadline = Instant::now() + Duration::from_secs(10);
            while let Ok(None) = self.child.try_wait() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        lock(&self.registry).pids.retain(|p| *p != pid);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shut_down();
    }
}

pub struct Response {
    pub status: u16,
    pub body: String,
    pub elapsed: Duration,
}

pub fn get(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
    timeout: Duration,
) -> Result<Response, String> {
    request(addr, "GET", path, bearer, None, timeout)
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    json: Option<&str>,
    timeout: Duration,
) -> Result<Response, String> {
    let start = Instant::now();
    let io = |e: std::io::Error| format!("{method} {path}: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = bearer {
        req.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(body) = json {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    stream.write_all(req.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(io)?;
    let elapsed = start.elapsed();
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{method} {path}: no HTTP status in the answer"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok(Response {
        status,
        body,
        elapsed,
    })
}

/// Median and maximum of a set of durations.
pub fn median_max(mut d: Vec<Duration>) -> (Duration, Duration) {
    d.sort();
    let max = d.last().copied().unwrap_or_default();
    let median = if d.is_empty() {
        Duration::ZERO
    } else {
        d[d.len() / 2]
    };
    (median, max)
}

/// The value of `"key":` in a JSON text, as written (an object, number or string), without
/// a JSON parser: enough to show a page's counts and total.
pub fn json_field<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    let at = body.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &body[at..];
    let end = if rest.starts_with('{') {
        rest.find('}')? + 1
    } else if let Some(stripped) = rest.strip_prefix('"') {
        stripped.find('"')? + 2
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(&rest[..end])
}
