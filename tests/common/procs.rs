//! Real `courier` processes for the multi-process tests, and a tiny
//! blocking HTTP client (one request per connection) to talk to them.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_courier");

/// A running `courier` process, killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
    /// `host:port` for processes that serve HTTP.
    pub http: Option<String>,
}

impl Proc {
    /// Starts `courier ARGS…`. A `web` or `serve` process binds a port of
    /// the kernel's choosing (`--listen 127.0.0.1:0`) and says which on its
    /// first stdout line; this waits for that line, so two tests can never
    /// race for one port.
    pub fn start(name: &str, args: &[&str]) -> Proc {
        Proc::start_under(name, &[], args)
    }

    /// Like `start`, with the command run under `wrapper` (say `unshare
    /// --pid --fork --kill-child`, to put it in a pid namespace of its own,
    /// as on another host). Signals go to the wrapper.
    pub fn start_under(name: &str, wrapper: &[&str], args: &[&str]) -> Proc {
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let serves = matches!(args[0].as_str(), "web" | "serve");
        if serves && !args.iter().any(|a| a == "--listen") {
            args.extend(["--listen".into(), "127.0.0.1:0".into()]);
        }
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let mut child = command
            .args(&args)
            .env(
                "COURIER_LOG",
                std::env::var("COURIER_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(if serves {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let http = if serves {
            use std::io::BufRead;
            let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            let addr = line
                .trim()
                .strip_prefix("courier listening on http://")
                .unwrap_or_else(|| panic!("{name} did not start: {line:?}"))
                .to_string();
            // Keep draining stdout so the process never blocks on it.
            std::thread::spawn(move || {
                let mut sink = String::new();
                while out.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                    sink.clear();
                }
            });
            Some(addr)
        } else {
            None
        };
        Proc {
            child,
            name: name.to_string(),
            http,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap();
    }

    /// SIGKILL and reap.
    pub fn kill9(mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        http(self.http.as_deref().unwrap(), "GET", path, None)
    }

    /// Waits for task `id` to succeed and checks that it succeeded exactly
    /// once (one `succeeded` line in its history); returns the task.
    pub fn finished_once(&self, id: &str, timeout: Duration) -> Value {
        let t = wait_for(&format!("task {id} to finish"), timeout, || {
            let (st, t) = self.get(&format!("/api/v1/tasks/{id}"));
            (st == 200 && t["state"] == "succeeded").then_some(t)
        });
        let (_, h) = self.get(&format!("/api/v1/tasks/{id}/history"));
        let ends = h["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["to_state"] == "succeeded")
            .count();
        assert_eq!(ends, 1, "task {id} finished {ends} times");
        t
    }

    pub fn put(&self, path: &str, body: Value) -> (u16, Value) {
        http(
            self.http.as_deref().unwrap(),
            "PUT",
            path,
            Some(&body.to_string()),
        )
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        http(
            self.http.as_deref().unwrap(),
            "POST",
            path,
            Some(&body.to_string()),
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes one HTTP/1.1 request (without reading the answer).
pub fn send_request(addr: &str, method: &str, path: &str, body: Option<&str>) -> TcpStream {
    send_request_with(addr, method, path, "", body)
}

/// [`send_request`] with `headers` (lines ending in `\r\n`) added.
pub fn send_request_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: Option<&str>,
) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

/// One request; returns the status and the body as JSON (or a JSON string).
pub fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    http_with(addr, method, path, "", body)
}

/// [`http`] with `headers` (lines ending in `\r\n`) added.
pub fn http_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let mut s = send_request_with(addr, method, path, headers, body);
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, v)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
