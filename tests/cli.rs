//! The `courier` command as a user runs it: `courier serve --demo` as a real
//! process, the client commands against it, `migrate`, and a clean stop on
//! SIGTERM that hands running work back.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::procs::{http, wait_for, Proc, BIN};

struct Serve {
    proc: Proc,
    url: String,
}

impl Serve {
    fn start(db: &str, extra: &[&str]) -> Serve {
        let mut args = vec!["serve", "--demo", "--db", db];
        args.extend_from_slice(extra);
        let proc = Proc::start("serve", &args);
        let url = format!("http://{}", proc.http.as_deref().unwrap());
        Serve { proc, url }
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("COURIER_URL", &self.url)
            .env("COURIER_LOG", "warn")
            .output()
            .expect("run courier")
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.cli(&a);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// SIGTERM, then wait for the exit; returns whether it exited cleanly.
    fn terminate(mut self) -> bool {
        self.proc.signal("-TERM");
        let start = Instant::now();
        loop {
            if let Some(status) = self.proc.child.try_wait().unwrap() {
                return status.success();
            }
            if start.elapsed() > Duration::from_secs(20) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A count read from a SQLite database (`sqlite://…`) beside the server
/// that uses it, read-only.
fn sqlite_count(db: &str, sql: &str) -> i64 {
    use sqlx::Connection;
    let url = format!("{db}?mode=ro");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
        })
}

#[test]
fn the_client_commands_drive_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let s = Serve::start(&db, &[]);

    // submit --wait: readable and JSON
    let out = s.cli(&["submit", "demo.echo", r#"{"hello":"cli"}"#, "--wait"]);
    assert!(out.status.success());
    let t = text(&out);
    assert!(
        t.contains("state     succeeded") && t.contains(r#"output    {"hello":"cli"}"#),
        "{t}"
    );
    let done = s.json(&[
        "submit",
        "demo.fanout",
        r#"{"n":2,"kind":"demo.echo","input":5}"#,
        "--wait",
    ]);
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["output"]["outputs"], serde_json::json!([5, 5]));

    // a suspended task, an event, show
    let waiting = s.json(&["submit", "demo.await_event", r#"{"name":"go"}"#]);
    let id = waiting["id"].as_str().unwrap().to_string();
    let start = Instant::now();
    while s.json(&["show", &id])["task"]["state"] != "suspended" {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = s.cli(&["event", &id, "go", r#"{"ok":true}"#]);
    assert!(
        out.status.success() && text(&out).contains("event #1 go sent"),
        "{}",
        text(&out)
    );
    let start = Instant::now();
    loop {
        let shown = s.json(&["show", &id]);
        if shown["task"]["state"] == "succeeded" {
            assert_eq!(shown["task"]["output"], serde_json::json!({"ok": true}));
            assert_eq!(shown["events"][0]["name"], "go");
            // pending, running, suspended, pending (woken), running, succeeded
            assert_eq!(shown["history"].as_array().unwrap().len(), 6);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    let readable = text(&s.cli(&["show", &id]));
    assert!(readable.contains("suspended → pending"), "{readable}");

    // cancel
    let sleeper = s.json(&["submit", "demo.sleep", r#"{"ms":60000}"#]);
    let sid = sleeper["id"].as_str().unwrap().to_string();
    let out = s.cli(&["cancel", &sid]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = Instant::now();
    while s.json(&["show", &sid])["task"]["state"] != "cancelled" {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }

    // tasks: listing, filters
    let listed = s.json(&["tasks", "--kind", "demo.echo", "--limit", "100"]);
    assert_eq!(listed["tasks"].as_array().unwrap().len(), 3); // one submitted, two fanout children
    let table = text(&s.cli(&["tasks", "--state", "cancelled"]));
    assert!(table.contains(&sid) && table.starts_with("ID"), "{table}");

    // errors: a clear message and a failing exit code
    let out = s.cli(&["submit", "no.such.kind", "{}"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("422 unknown_kind"));
    let out = s.cli(&["submit", "demo.echo", "{not json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
    let out = s.cli(&["show", "01234567-89ab-7def-8123-456789abcdef"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("404 not_found"));
    let out = s.cli(&["submit", "demo.fail", r#"{"message":"nope"}"#, "--wait"]);
    assert!(!out.status.success(), "a failed task fails the command");

    // queue options, queues
    let retried = s.json(&[
        "submit",
        "demo.flaky",
        r#"{"fail_times":1}"#,
        "--max-attempts",
        "2",
        "--backoff",
        "20ms",
        "--priority",
        "-5",
        "--wait",
    ]);
    assert_eq!(
        (
            &retried["state"],
            &retried["attempts"],
            &retried["priority"]
        ),
        (&json!("succeeded"), &json!(2), &json!(-5)),
        "{retried}"
    );
    let later = s.json(&[
        "submit",
        "demo.echo",
        "1",
        "--delay",
        "1h",
        "--queue",
        "later",
    ]);
    assert_eq!(
        (&later["state"], &later["queue"]),
        (&json!("scheduled"), &json!("later"))
    );
    let readable = text(&s.cli(&["show", later["id"].as_str().unwrap()]));
    assert!(
        readable.contains("next run") && readable.contains("queue     later"),
        "{readable}"
    );
    let q = s.json(&[
        "queue",
        "later",
        "--concurrency",
        "2",
        "--rate",
        "0.5",
        "--pause",
    ]);
    assert_eq!(
        (
            &q["concurrency"],
            &q["rate_per_s"],
            &q["paused"],
            &q["scheduled"]
        ),
        (&json!(2), &json!(0.5), &json!(true), &json!(1))
    );
    let q = s.json(&["queue", "later", "--concurrency", "none", "--resume"]);
    assert_eq!(
        (&q["concurrency"], &q["paused"]),
        (&json!(null), &json!(false))
    );
    let table = text(&s.cli(&["queues"]));
    assert!(
        table.starts_with("QUEUE") && table.contains("later"),
        "{table}"
    );
    let out = s.cli(&["submit", "demo.echo", "1", "--priority", "500"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("422 invalid_field"));
    let out = s.cli(&["queue", "later", "--concurrency", "lots"]);
    assert!(!out.status.success());

    // SIGTERM: a clean exit, and the running task handed back at once.
    let running = s.json(&["submit", "demo.sleep", r#"{"ms":60000}"#]);
    let rid = running["id"].as_str().unwrap().to_string();
    wait_for("the sleeping task to run", Duration::from_secs(20), || {
        (s.json(&["show", &rid])["task"]["state"] == "running").then_some(())
    });
    assert!(
        s.terminate(),
        "courier serve did not stop cleanly on SIGTERM"
    );
    let again = Serve::start(&db, &["--capacity", "1"]);
    let t = again.json(&["show", &rid])["task"].clone();
    assert!(
        !t["started_at"].is_null() && t["state"] != "cancelled",
        "the sleeping task should have been handed back: {t}"
    );
    // The second server picks it up again at once (it was handed back, not orphaned).
    let start = Instant::now();
    loop {
        let shown = again.json(&["show", &rid]);
        let t = shown["task"].clone();
        let runs = shown["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["to_state"] == "running")
            .count();
        if t["state"] == "running" && runs == 2 && t["attempts"] == 1 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{t}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tokens_migrate_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());

    // migrate: SQLite and the real PostgreSQL.
    let out = Command::new(BIN)
        .args(["migrate", "--db", &db])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(Path::new(&dir.path().join("c.db")).exists());
    // In a schema of its own: the shared database's public schema may hold
    // another build's migrations (a newer branch's tests migrated it).
    let pg = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(common::TestDb::postgres());
    let out = Command::new(BIN)
        .args(["migrate", "--db", &pg.process_url()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args(["migrate", "--db", "mysql://x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported database URL"));

    // The PostgreSQL transport goes through the database: not a SQLite one.
    let out = Command::new(BIN)
        .args([
            "serve",
            "--demo",
            "--db",
            &db,
            "--bus",
            "postgres",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --db postgres"));

    // Failure detection that would declare a live executor dead between two
    // heartbeats is refused.
    let out = Command::new(BIN)
        .args([
            "executor",
            "--demo",
            "--db",
            &db,
            "--heartbeat-ms",
            "2000",
            "--dead-after-ms",
            "3000",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at least three heartbeats"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A token file: the API needs one of its tokens.
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "# operators\nalpha-token\n\nbeta-token\n").unwrap();
    let s = Serve::start(&db, &["--api-token-file", tokens.to_str().unwrap()]);
    let out = s.cli(&["tasks"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401 unauthorized"));
    let out = s.cli(&["tasks", "--token", "beta-token"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.terminate());
}

/// Runs `courier [format] serve` (no kinds: it warns that it runs no
/// executor) with its stderr on a pipe, stops it with SIGTERM and returns
/// what it logged.
fn logs_of_a_serve(format: &[&str]) -> String {
    use std::io::BufRead;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let mut args: Vec<&str> = format.to_vec();
    args.extend(["serve", "--db", &db, "--listen", "127.0.0.1:0"]);
    let mut child = Command::new(BIN)
        .args(&args)
        .env("COURIER_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("courier listening on"), "{line:?}");
    // Keep reading, so that nothing the server prints on stdout fails.
    let drain = std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = drain.join();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    stderr
}

#[test]
fn logs_are_plain_text_off_a_terminal_or_json_lines() {
    let text = logs_of_a_serve(&[]);
    assert!(text.contains("WARN"), "{text}");
    assert!(text.contains("no task kinds registered"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "no colour codes when stderr is not a terminal: {text:?}"
    );

    let json = logs_of_a_serve(&["--log-format", "json"]);
    let lines: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 2, "{json}");
    assert!(lines
        .iter()
        .all(|l| l["timestamp"].is_string() && l["level"].is_string()));
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["fields"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("no task kinds")),
        "{json}"
    );

    let out = Command::new(BIN)
        .args(["--log-format", "xml", "migrate"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--log-format") && err.contains("json"),
        "{err}"
    );
}

/// The config file, the environment and the command line, in the one
/// order the README gives: flag > `COURIER_*` > file > default. A client
/// command names the URL it called, which shows which one won.
#[test]
fn config_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("courier.toml");
    std::fs::write(
        &file,
        "url = \"http://127.0.0.1:1\"\nlog-format = \"json\"\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let called = |envs: &[(&str, &str)], args: &[&str]| -> String {
        let mut c = Command::new(BIN);
        c.args(args)
            .env_remove("COURIER_URL")
            .env_remove("COURIER_CONFIG");
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        err.split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {err:?}"))
            .split("/api")
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        called(&[], &["--config", file, "tasks"]),
        "http://127.0.0.1:1"
    );
    assert_eq!(
        called(&[("COURIER_CONFIG", file)], &["tasks"]),
        "http://127.0.0.1:1"
    );
    assert_eq!(
        called(
            &[("COURIER_URL", "http://127.0.0.1:2")],
            &["--config", file, "tasks"]
        ),
        "http://127.0.0.1:2"
    );
    assert_eq!(
        called(
            &[("COURIER_URL", "http://127.0.0.1:2")],
            &["--config", file, "tasks", "--url", "http://127.0.0.1:3"]
        ),
        "http://127.0.0.1:3"
    );

    std::fs::write(dir.path().join("bad.toml"), "lisen = \"x\"\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "--config",
            dir.path().join("bad.toml").to_str().unwrap(),
            "tasks",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`lisen` is no option"), "{err}");
}

#[test]
fn version_and_completions() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(text(&out).starts_with("courier "), "{}", text(&out));
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let script = text(&out);
        assert!(
            script.contains("serve") && script.contains("--db"),
            "{shell}"
        );
    }
}

/// `courier executor --metrics-listen`: an executor without the web front
/// end serves its own counters, which no web node has (each process counts
/// its own runs).
#[test]
fn an_executor_serves_its_own_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let bus = format!("socket:{}", dir.path().join("bus").display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = format!("127.0.0.1:{port}");
    let exec = Proc::start(
        "executor",
        &[
            "executor",
            "--demo",
            "--db",
            &db,
            "--bus",
            &bus,
            "--node",
            "exec-m",
            "--metrics-listen",
            &metrics,
        ],
    );
    let web = Proc::start(
        "web",
        &["web", "--db", &db, "--bus", &bus, "--node", "web-m"],
    );
    common::procs::wait_for("the executor's kinds", Duration::from_secs(20), || {
        let (_, k) = web.get("/api/v1/kinds");
        k["kinds"]
            .as_array()?
            .contains(&json!("demo.echo"))
            .then_some(())
    });
    let (st, t) = web.post(
        "/api/v1/tasks",
        json!({"kind": "demo.echo", "input": {"x": 1}, "wait_ms": 20000}),
    );
    assert_eq!((st, &t["state"]), (200, &json!("succeeded")), "{t}");

    let addr = metrics.clone();
    let text = common::procs::wait_for("the executor's metrics", Duration::from_secs(20), || {
        let (st, body) = common::procs::http(&addr, "GET", "/metrics", None);
        let text = body.as_str().unwrap_or("").to_string();
        (st == 200
            && text
                .contains("courier_tasks_finished_total{kind=\"demo.echo\",state=\"succeeded\"} 1"))
        .then_some(text)
    });
    assert!(
        text.contains("courier_run_duration_seconds_count{kind=\"demo.echo\",queue=\"default\"} 1"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    let (st, h) = common::procs::http(&metrics, "GET", "/healthz", None);
    assert_eq!((st, &h["status"]), (200, &json!("ok")));
    // Only those two: no API, no dashboard.
    assert_eq!(
        common::procs::http(&metrics, "GET", "/api/v1/tasks", None).0,
        404
    );
    // The web node ran nothing: it has no run of its own to count.
    let (_, wm) = web.get("/metrics");
    assert!(
        !wm.as_str()
            .unwrap()
            .contains("courier_tasks_finished_total{"),
        "{wm}"
    );
    drop(web);
    exec.signal("-TERM");
}

/// Backpressure at the door (`--max-connections`): while the connections
/// the server may serve are all held, a new one is accepted by the kernel
/// but not served until one of them ends; then a flood of clients, far
/// more than the limit, is served a few at a time, and every request is
/// answered and every task finishes (nothing refused, nothing lost).
#[test]
fn connections_past_the_limit_wait_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let s = Serve::start(&db, &["--max-connections", "2", "--workers", "1"]);
    let addr = s.url.trim_start_matches("http://").to_string();

    // Two sync waits on a 2 s sleep hold both connections.
    let holders: Vec<_> = (0..2)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                // One request a connection (`Connection: close`).
                let body = json!({"kind": "demo.sleep", "input": {"ms": 2000}, "wait_ms": 20000});
                let r = http(&addr, "POST", "/api/v1/tasks", Some(&body.to_string()));
                (r, Instant::now())
            })
        })
        .collect();
    // Both are served once both their tasks exist: read from the database
    // itself, since every connection the server serves is held.
    wait_for("both holders' tasks", Duration::from_secs(20), || {
        (sqlite_count(&db, "SELECT COUNT(*) FROM tasks WHERE kind = 'demo.sleep'") == 2)
            .then_some(())
    });
    let (st, _) = http(&addr, "GET", "/healthz", None);
    assert_eq!(st, 200);
    // Served only once a holder's connection ended, which is after its
    // task finished: read from the database, not from when the holder's
    // thread saw its answer (on a loaded machine the server could close
    // that connection and serve this one before the thread ran again).
    let finished = sqlite_count(
        &db,
        "SELECT COUNT(*) FROM tasks WHERE kind = 'demo.sleep' AND state = 'succeeded'",
    );
    assert!(
        finished >= 1,
        "the third connection was served while both allowed ones were held"
    );
    for h in holders {
        let ((st, t), _) = h.join().unwrap();
        assert_eq!(st, 200, "{t}");
        assert_eq!(t["state"], "succeeded", "{t}");
    }

    // A flood: 40 clients, 5 sync creates each, on one-request connections.
    let flood: Vec<_> = (0..40)
        .map(|c| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                (0..5)
                    .map(|i| {
                        let body = json!({"kind": "demo.echo", "input": [c, i], "wait_ms": 30000});
                        http(&addr, "POST", "/api/v1/tasks", Some(&body.to_string()))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut outputs = Vec::new();
    for h in flood {
        for (st, t) in h.join().unwrap() {
            assert_eq!(st, 200, "{t}");
            assert_eq!(t["state"], "succeeded", "{t}");
            outputs.push(t["output"].clone());
        }
    }
    outputs.sort_by_key(|o| (o[0].as_i64(), o[1].as_i64()));
    outputs.dedup();
    assert_eq!(
        outputs.len(),
        200,
        "every create answered with its own task"
    );
    assert!(s.terminate(), "a clean stop after the flood");
}

/// An OTLP/HTTP receiver inside the test: takes `POST /v1/traces` (JSON),
/// answers 200, and keeps every body.
fn otlp_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let keep = keep.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                // Requests on one connection, one after the other.
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split(' ').nth(1).unwrap_or("").to_string();
                    let mut len = 0;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    if path == "/v1/traces" {
                        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                            keep.lock().unwrap().push(v);
                        }
                    }
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
                    );
                }
            });
        }
    });
    (url, got)
}

/// `--otlp URL`: a web node and an executor, two processes on one socket
/// bus, export their spans to a receiver in this test; the task's trace
/// holds the web node's `submit` span and the executor's `task` span (its
/// run), both under the task's own trace id.
#[test]
fn one_task_one_trace_across_two_processes() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let bus = format!("socket:{}", dir.path().join("bus").display());
    let (otlp, got) = otlp_receiver();
    let exec = Proc::start(
        "executor",
        &[
            "executor", "--demo", "--db", &db, "--bus", &bus, "--node", "exec-t", "--otlp", &otlp,
        ],
    );
    let web = Proc::start(
        "web",
        &[
            "web", "--db", &db, "--bus", &bus, "--node", "web-t", "--otlp", &otlp,
        ],
    );
    common::procs::wait_for("the executor's kinds", Duration::from_secs(20), || {
        let (_, k) = web.get("/api/v1/kinds");
        k["kinds"]
            .as_array()?
            .contains(&json!("demo.steps"))
            .then_some(())
    });
    // The caller's trace: the request's span and the task join it.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736".to_string();
    let (st, t) = common::procs::http_with(
        web.http.as_deref().unwrap(),
        "POST",
        "/api/v1/tasks",
        &format!("traceparent: 00-{trace}-00f067aa0ba902b7-01\r\n"),
        Some(
            &json!({"kind": "demo.echo", "input": {"traced": true}, "wait_ms": 20000}).to_string(),
        ),
    );
    assert_eq!((st, &t["state"]), (200, &json!("succeeded")), "{t}");
    assert_eq!(t["trace_id"], json!(trace), "{t}");
    // A clean stop exports what is buffered.
    for p in [&web, &exec] {
        p.signal("-TERM");
    }
    for mut p in [web, exec] {
        let start = Instant::now();
        while p.child.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{} did not stop",
                p.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // (process command, span name) of every span in the task's trace.
    let mut in_trace = Vec::new();
    for body in got.lock().unwrap().iter() {
        for rs in body["resourceSpans"].as_array().into_iter().flatten() {
            let command = rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "courier.command")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or("")
                .to_string();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    if span["traceId"].as_str() == Some(trace.as_str()) {
                        in_trace.push((
                            command.clone(),
                            span["name"].as_str().unwrap_or("").to_string(),
                        ));
                    }
                }
            }
        }
    }
    assert!(
        in_trace
            .iter()
            .any(|(c, name)| c == "web" && name.starts_with("POST /api/v1/tasks")),
        "the web node's request span continues the caller's trace: {in_trace:?}"
    );
    assert!(
        in_trace.contains(&("web".into(), "submit".into())),
        "the web node's submit span is in the task's trace: {in_trace:?}"
    );
    assert!(
        in_trace.contains(&("executor".into(), "task".into())),
        "the executor's run span is in the task's trace: {in_trace:?}"
    );
}
