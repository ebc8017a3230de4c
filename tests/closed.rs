//! Closed by default (issue 23): a server reachable from other machines
//! needs a token, a token file that holds none is an error, and the demo
//! kinds write only under the directory the operator names and nest no
//! fan-outs. Real `courier` processes, as an operator starts them.

mod common;

use serde_json::json;
use std::process::{Command, Stdio};

use common::procs::Proc;

const BIN: &str = env!("CARGO_BIN_EXE_courier");

/// Runs `courier ARGS…` expecting it to refuse to start: its exit status
/// and what it said on stderr.
fn refused(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("COURIER_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "courier {args:?} started: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_server_on_a_public_address_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    for cmd in ["serve", "web"] {
        let err = refused(&[cmd, "--db", &db, "--listen", "0.0.0.0:0"]);
        assert!(
            err.contains("without a token")
                && err.contains("--api-token")
                && err.contains("--insecure-no-auth"),
            "{cmd}: {err}"
        );
    }
    // Named on purpose, it runs open.
    let mut open = Proc::start(
        "open",
        &[
            "serve",
            "--db",
            &db,
            "--listen",
            "0.0.0.0:0",
            "--insecure-no-auth",
        ],
    );
    assert!(open.alive());
    // With a token it runs, and the API wants it.
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "# ops\ns3cret\n").unwrap();
    let guarded = Proc::start(
        "guarded",
        &[
            "serve",
            "--db",
            &db,
            "--listen",
            "0.0.0.0:0",
            "--api-token-file",
            tokens.to_str().unwrap(),
        ],
    );
    let port = guarded.http.as_deref().unwrap().rsplit(':').next().unwrap();
    let (st, _) = common::procs::http(&format!("127.0.0.1:{port}"), "GET", "/api/v1/tasks", None);
    assert_eq!(st, 401);
    // Loopback needs no token (the default --listen).
    let mut local = Proc::start("local", &["serve", "--db", &db]);
    assert!(local.alive());
}

#[test]
fn a_token_file_that_holds_no_token_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let tokens = dir.path().join("tokens");
    for text in ["", "\n\n", "# only a comment\n   \n"] {
        std::fs::write(&tokens, text).unwrap();
        let err = refused(&[
            "serve",
            "--db",
            &db,
            "--listen",
            "127.0.0.1:0",
            "--api-token-file",
            tokens.to_str().unwrap(),
        ]);
        assert!(err.contains("holds no token"), "{text:?}: {err}");
    }
}

#[test]
fn demo_kinds_write_only_under_the_demo_log_dir_and_nest_no_fanouts() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let outside = dir.path().join("outside.log");
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let run = |p: &Proc, input: serde_json::Value| {
        let (st, t) = p.post(
            "/api/v1/tasks",
            json!({"kind": "demo.steps", "input": input, "wait_ms": 10000}),
        );
        assert_eq!(st, 200, "{t}");
        t
    };

    // No --demo-log-dir: a task that gives `log` fails, writing nothing.
    let mut bare = Proc::start("bare", &["serve", "--demo", "--db", &db]);
    let t = run(&bare, json!({"n": 1, "ms": 1, "log": outside}));
    assert_eq!(t["state"], "failed", "{t}");
    assert!(
        t["error"].as_str().unwrap().contains("--demo-log-dir"),
        "{t}"
    );
    assert!(!outside.exists());
    // demo.fanout of demo.fanout is refused by the parent before it spawns.
    let (st, t) = bare.post(
        "/api/v1/tasks",
        json!({"kind": "demo.fanout", "input": {"n": 2, "kind": "demo.fanout", "input": {"n": 2, "kind": "demo.echo"}}, "wait_ms": 10000}),
    );
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["state"], "failed", "{t}");
    assert!(t["error"]
        .as_str()
        .unwrap()
        .contains("does not spawn demo.fanout"));
    let (_, children) = bare.get(&format!(
        "/api/v1/tasks/{}/children",
        t["id"].as_str().unwrap()
    ));
    assert_eq!(children["tasks"], json!([]), "{children}");
    bare.signal("-TERM");
    let _ = bare.child.wait();

    // With one: a relative `log` lands under it, an absolute one inside it
    // is taken, and neither `..` nor a path outside it nor a link is.
    let mut confined = Proc::start(
        "confined",
        &[
            "serve",
            "--demo",
            "--db",
            &db,
            "--demo-log-dir",
            logs.to_str().unwrap(),
        ],
    );
    let t = run(&confined, json!({"n": 2, "ms": 1, "log": "steps.log"}));
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(
        std::fs::read_to_string(logs.join("steps.log")).unwrap(),
        "step 0\nstep 1\n"
    );
    let t = run(
        &confined,
        json!({"n": 1, "ms": 1, "log": logs.join("abs.log")}),
    );
    assert_eq!(t["state"], "succeeded", "{t}");
    assert!(logs.join("abs.log").exists());
    std::os::unix::fs::symlink(&outside, logs.join("link.log")).unwrap();
    for bad in [json!("../outside.log"), json!(outside), json!("link.log")] {
        let t = run(&confined, json!({"n": 1, "ms": 1, "log": bad}));
        assert_eq!(t["state"], "failed", "{bad}: {t}");
    }
    assert!(!outside.exists(), "a demo kind wrote outside its directory");
    assert!(confined.alive());
}
