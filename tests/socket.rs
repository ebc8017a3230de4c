//! The Unix-socket transport with real processes: a web node and executors
//! as separate `courier` processes on one host, on a shared SQLite file and
//! on PostgreSQL. All four flows cross process boundaries; executors and web
//! nodes are killed with SIGKILL; garbage is written to a socket.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::fleet::node_of;
use common::procs::{http, send_request, wait_for, Proc};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

/// Fast failure detection, so the takeover test does not wait long.
const FAST: [&str; 4] = ["--heartbeat-ms", "200", "--dead-after-ms", "1500"];

struct Mesh {
    db: String,
    bus: String,
    _dir: tempfile::TempDir,
}

impl Mesh {
    fn new(db: Option<String>) -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let db = db.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("c.db").display()));
        let bus = format!("socket:{}", dir.path().join("sockets").display());
        Mesh { db, bus, _dir: dir }
    }

    fn executor(&self, node: &str, kinds: &str) -> Proc {
        let mut args = vec![
            "executor", "--demo", "--db", &self.db, "--bus", &self.bus, "--node", node, "--kinds",
            kinds,
        ];
        args.extend(FAST);
        Proc::start(node, &args)
    }

    fn web(&self, node: &str) -> Proc {
        Proc::start(
            node,
            &["web", "--db", &self.db, "--bus", &self.bus, "--node", node],
        )
    }

    fn socket(&self, node: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(self.bus.trim_start_matches("socket:"))
            .join(format!("{node}.sock"))
    }
}

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

fn state_of(web: &Proc, id: &str) -> Value {
    web.get(&format!("/api/v1/tasks/{id}")).1
}

fn until_state(web: &Proc, id: &str, state: &str) -> Value {
    wait_for(&format!("task {id} to be {state}"), T, || {
        let t = state_of(web, id);
        (t["state"] == state).then_some(t)
    })
}

/// Waits until `node` is connected to every one of `peers` over the sockets.
fn connected(node: &Proc, peers: &[&str]) {
    wait_for(&format!("{} to connect to {peers:?}", node.name), T, || {
        let (_, h) = node.get("/healthz");
        let have = h["bus"]["transports"]["socket"]["peers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        peers.iter().all(|p| have.contains(&json!(p))).then_some(())
    });
}

/// The web node answers waiting requests once executors and sockets are up.
fn ready(web: &Proc) {
    wait_for("a synchronous answer through the sockets", T, || {
        let (st, _) = web.post(
            "/api/v1/tasks",
            json!({"kind": "demo.sleep", "input": {"ms": 1}, "wait_ms": 2000}),
        );
        (st == 200).then_some(())
    });
}

fn the_four_flows_cross_processes(mesh: &Mesh) {
    // exec-a runs the parents (fan-out) and exec-b the children (echo), so
    // sub-tasks must cross; both run sleep and await_event.
    let a = mesh.executor("exec-a", "demo.fanout,demo.await_event,demo.sleep");
    let b = mesh.executor("exec-b", "demo.echo,demo.await_event,demo.sleep");
    let web = mesh.web("web-1");
    connected(&web, &["exec-a", "exec-b"]);
    ready(&web);

    // Flows 1 and 2: the waiting request is answered by an executor process;
    // new tasks are spread over the executors that run the kind.
    let mut ran_on = HashSet::new();
    for i in 0..12 {
        let (st, t) = web.post(
            "/api/v1/tasks",
            json!({"kind": "demo.sleep", "input": {"ms": 1}, "wait_ms": 10000}),
        );
        assert_eq!((st, &t["state"]), (200, &json!("succeeded")), "{i}: {t}");
        ran_on.insert(node_of(t["executor_id"].as_str().unwrap()).to_string());
    }
    assert_eq!(
        ran_on,
        HashSet::from(["exec-a".to_string(), "exec-b".to_string()])
    );
    let (st, t) = web.post(
        "/api/v1/tasks",
        json!({"kind": "demo.echo", "input": {"x": 1}, "wait_ms": 10000}),
    );
    assert_eq!((st, &t["output"]), (200, &json!({"x": 1})));
    assert!(t["executor_id"].as_str().unwrap().starts_with("exec-b"));

    // Flow 4: the parent on exec-a, its children on exec-b, the reports back.
    let (st, f) = web.post(
        "/api/v1/tasks",
        json!({"kind": "demo.fanout", "input": {"n": 6, "kind": "demo.echo", "input": "c"}, "wait_ms": 15000}),
    );
    assert_eq!((st, &f["state"]), (200, &json!("succeeded")), "{f}");
    assert_eq!(
        f["output"]["outputs"],
        json!(["c", "c", "c", "c", "c", "c"])
    );
    assert!(f["executor_id"].as_str().unwrap().starts_with("exec-a"));
    let (_, ch) = web.get(&format!("/api/v1/tasks/{}/children", id(&f)));
    assert!(ch["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["executor_id"].as_str().unwrap().starts_with("exec-b")));

    // Flow 3: an event reaches the task in whichever executor holds it.
    let (_, w) = web.post(
        "/api/v1/tasks",
        json!({"kind": "demo.await_event", "input": {"name": "go"}}),
    );
    until_state(&web, &id(&w), "suspended");
    let (st, _) = web.post(
        &format!("/api/v1/tasks/{}/events", id(&w)),
        json!({"name": "go", "payload": 42}),
    );
    assert_eq!(st, 202);
    let done = until_state(&web, &id(&w), "succeeded");
    assert_eq!(
        (done["output"].clone(), done["attempts"].clone()),
        (json!(42), json!(1))
    );

    // Flow 3: a cancel reaches a sleeping task in another process.
    let (_, s) = web.post(
        "/api/v1/tasks",
        json!({"kind": "demo.sleep", "input": {"ms": 60000}}),
    );
    until_state(&web, &id(&s), "running");
    web.post(&format!("/api/v1/tasks/{}/cancel", id(&s)), json!(null));
    until_state(&web, &id(&s), "cancelled");
    drop((a, b, web));
}

/// SIGKILL the executor that ran a task now suspended (held by nobody, in
/// the database); send the event while no executor runs: it wakes the task,
/// which waits to be claimed; start another executor: it replays the task,
/// which finishes with the event.
fn a_killed_executors_suspended_task_gets_its_event(mesh: &Mesh) {
    let a = mesh.executor("exec-a", "demo.await_event,demo.sleep");
    let web = mesh.web("web-1");
    ready(&web);
    let (_, w) = web.post(
        "/api/v1/tasks",
        json!({"kind": "demo.await_event", "input": {"name": "booted"}}),
    );
    let t = until_state(&web, &id(&w), "suspended");
    assert_eq!(t["executor_id"], Value::Null, "{t}");
    let (_, h) = web.get(&format!("/api/v1/tasks/{}/history", id(&w)));
    assert!(h["history"][1]["changed_by"]
        .as_str()
        .unwrap()
        .starts_with("exec-a"));
    a.kill9();
    let (st, _) = web.post(
        &format!("/api/v1/tasks/{}/events", id(&w)),
        json!({"name": "booted", "payload": {"ok": true}}),
    );
    assert_eq!(st, 202, "the event is committed while nobody runs the task");
    assert_eq!(state_of(&web, &id(&w))["state"], "pending", "woken");
    let c = mesh.executor("exec-c", "demo.await_event,demo.sleep");
    let done = until_state(&web, &id(&w), "succeeded");
    assert_eq!(done["output"], json!({"ok": true}));
    // The same attempt, run again elsewhere: the dead executor used none.
    assert_eq!(done["attempts"], 1);
    let (_, h) = web.get(&format!("/api/v1/tasks/{}/history", id(&w)));
    let runs = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["to_state"] == "running")
        .count();
    assert_eq!(runs, 2, "{h}");
    assert!(done["executor_id"].as_str().unwrap().starts_with("exec-c"));
    let (_, ex) = web.get("/api/v1/executors");
    let dead = ex["executors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["node"] == "exec-a")
        .unwrap()
        .clone();
    assert_eq!(dead["state"], "dead");
    wait_for("the dead node's socket file to be removed", T, || {
        (!mesh.socket("exec-a").exists()).then_some(())
    });
    drop((c, web));
}

/// SIGKILL a web node while a request waits on it: the task still finishes
/// and another web node reads it.
fn a_killed_web_node_loses_no_task(mesh: &Mesh) {
    let a = mesh.executor("exec-a", "demo.sleep");
    let web1 = mesh.web("web-1");
    let web2 = mesh.web("web-2");
    ready(&web1);
    let body = json!({"kind": "demo.sleep", "input": {"ms": 1500}, "wait_ms": 20000, "idempotency_key": "killed-web"}).to_string();
    let pending = send_request(
        web1.http.as_deref().unwrap(),
        "POST",
        "/api/v1/tasks",
        Some(&body),
    );
    let t = wait_for("the task behind the waiting request to run", T, || {
        let (_, l) = web2.get("/api/v1/tasks?kind=demo.sleep&state=running");
        l["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["idempotency_key"] == "killed-web")
            .cloned()
    });
    web1.kill9();
    drop(pending);
    let done = until_state(&web2, &id(&t), "succeeded");
    assert_eq!(done["output"], json!({"slept_ms": 1500}));
    drop((a, web2));
}

/// Garbage and an oversized frame on an executor's socket close those
/// connections only; the executor goes on serving.
fn garbage_on_a_socket_closes_only_that_connection(mesh: &Mesh) {
    let mut a = mesh.executor("exec-a", "demo.echo");
    let web = mesh.web("web-1");
    wait_for("exec-a's socket", T, || {
        mesh.socket("exec-a").exists().then_some(())
    });
    let mut g = UnixStream::connect(mesh.socket("exec-a")).unwrap();
    let _ = g.write_all(b"\x00\x00\x00\x10not json at all!\x00\x00\x00\x05{}{}{");
    let mut big = UnixStream::connect(mesh.socket("exec-a")).unwrap();
    let _ = big.write_all(&u32::MAX.to_be_bytes());
    let _ = big.write_all(&[b'x'; 1024]);
    let mut hello_then_junk = UnixStream::connect(mesh.socket("exec-a")).unwrap();
    let hello =
        json!({"t": "hello", "v": 1, "node": "intruder", "ads": {"pools": [], "executors": []}})
            .to_string();
    let _ = hello_then_junk.write_all(&(hello.len() as u32).to_be_bytes());
    let _ = hello_then_junk.write_all(hello.as_bytes());
    let junk = json!({"t": "env", "env": {"v": 99}}).to_string();
    let _ = hello_then_junk.write_all(&(junk.len() as u32).to_be_bytes());
    let _ = hello_then_junk.write_all(junk.as_bytes());
    for (what, conn) in [
        ("the connection that sent garbage", &mut g),
        ("the connection that sent an oversized frame", &mut big),
        (
            "the connection that sent a bad envelope after its hello",
            &mut hello_then_junk,
        ),
    ] {
        wait_for(&format!("exec-a to close {what}"), T, || {
            closed_by_peer(conn).then_some(())
        });
    }
    assert!(
        a.alive(),
        "garbage on the socket must not crash the executor"
    );
    let (st, t) = http(
        web.http.as_deref().unwrap(),
        "POST",
        "/api/v1/tasks",
        Some(&json!({"kind": "demo.echo", "input": "still here", "wait_ms": 10000}).to_string()),
    );
    assert_eq!((st, &t["output"]), (200, &json!("still here")), "{t}");
    drop((a, web, g, big, hello_then_junk));
}

/// Whether the other end has closed `conn`: what it sent (its hello) is
/// read and dropped, then the end of the stream, or an error, says so.
fn closed_by_peer(conn: &mut UnixStream) -> bool {
    use std::io::Read;
    conn.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn sqlite_the_four_flows_cross_processes() {
    the_four_flows_cross_processes(&Mesh::new(None));
}

#[test]
fn sqlite_a_killed_executors_suspended_task_gets_its_event() {
    a_killed_executors_suspended_task_gets_its_event(&Mesh::new(None));
}

#[test]
fn sqlite_a_killed_web_node_loses_no_task() {
    a_killed_web_node_loses_no_task(&Mesh::new(None));
}

#[test]
fn sqlite_garbage_on_a_socket_closes_only_that_connection() {
    garbage_on_a_socket_closes_only_that_connection(&Mesh::new(None));
}

fn pg_db() -> (String, common::TestDb) {
    let db = actix::System::new().block_on(common::TestDb::postgres());
    (db.process_url(), db)
}

#[test]
fn postgres_the_four_flows_cross_processes() {
    let (url, _db) = pg_db();
    the_four_flows_cross_processes(&Mesh::new(Some(url)));
}

#[test]
fn postgres_a_killed_executors_suspended_task_gets_its_event() {
    let (url, _db) = pg_db();
    a_killed_executors_suspended_task_gets_its_event(&Mesh::new(Some(url)));
}

// Trust: only processes of the same user form a mesh (the socket directory
// is the process's own and closed to others; sockets and peers of another
// uid are skipped). These tests run as root and give files to `nobody`.

const NOBODY: u32 = 65534;
/// Set for the copy of this test binary that plays a peer of another user.
const INTRUDER: &str = "COURIER_TEST_SOCKET_INTRUDER";

impl Mesh {
    fn dir(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(self.bus.trim_start_matches("socket:"))
    }
}

/// Whether files can be given to another user here (the tests run as root);
/// if not, the test is skipped with a word on stderr.
fn can_chown(path: &std::path::Path) -> bool {
    match std::os::unix::fs::chown(path, Some(NOBODY), None) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("skipped: cannot give a file to uid {NOBODY} (not root)");
            false
        }
        Err(e) => panic!("chown {}: {e}", path.display()),
    }
}

/// Makes `dir` with `mode`, as the socket directory someone prepared.
fn make_dir(dir: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Starts an executor on the mesh's socket directory that must refuse to
/// start; returns what it wrote on stderr.
fn refused_start(mesh: &Mesh) -> String {
    use std::io::Read;
    let child = std::process::Command::new(common::procs::BIN)
        .args([
            "executor",
            "--demo",
            "--db",
            &mesh.db,
            "--bus",
            &mesh.bus,
            "--node",
            "exec-a",
            "--kinds",
            "demo.echo",
        ])
        .env("COURIER_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Killed when dropped, should it start after all.
    let mut p = Proc {
        child,
        name: "exec-a".into(),
        http: None,
    };
    let status = wait_for("the executor to refuse to start", T, || {
        p.child.try_wait().unwrap()
    });
    let mut err = String::new();
    p.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "started: {err}");
    err
}

#[test]
fn a_socket_directory_others_can_write_to_is_refused() {
    let mesh = Mesh::new(None);
    make_dir(&mesh.dir(), 0o777);
    let err = refused_start(&mesh);
    assert!(
        err.contains(&mesh.dir().display().to_string())
            && err.contains("writable by group or others (mode 777)"),
        "{err}"
    );
    make_dir(&mesh.dir(), 0o770);
    let err = refused_start(&mesh);
    assert!(err.contains("writable by group or others"), "{err}");
}

#[test]
fn a_socket_directory_of_another_user_is_refused() {
    let mesh = Mesh::new(None);
    make_dir(&mesh.dir(), 0o700);
    if !can_chown(&mesh.dir()) {
        return;
    }
    let err = refused_start(&mesh);
    assert!(
        err.contains(&mesh.dir().display().to_string())
            && err.contains(&format!("owned by uid {NOBODY}")),
        "{err}"
    );
}

#[test]
fn a_socket_directory_that_is_a_symlink_is_refused() {
    let mesh = Mesh::new(None);
    let real = mesh.dir().with_file_name("real");
    make_dir(&real, 0o700);
    std::os::unix::fs::symlink(&real, mesh.dir()).unwrap();
    let err = refused_start(&mesh);
    assert!(
        err.contains(&mesh.dir().display().to_string()) && err.contains("symbolic link"),
        "{err}"
    );
}

#[test]
fn a_missing_socket_directory_is_created_0700() {
    use std::os::unix::fs::PermissionsExt;
    let mesh = Mesh::new(None);
    assert!(!mesh.dir().exists());
    let _a = mesh.executor("exec-a", "demo.echo");
    wait_for("exec-a's socket", T, || {
        mesh.socket("exec-a").exists().then_some(())
    });
    let mode = std::fs::metadata(mesh.dir()).unwrap().permissions().mode();
    assert_eq!(format!("{:o}", mode & 0o7777), "700");
}

/// Fails if `listener` gets a connection within `within`.
fn never_dialled(name: &str, listener: &std::os::unix::net::UnixListener, within: Duration) {
    listener.set_nonblocking(true).unwrap();
    let until = std::time::Instant::now() + within;
    while std::time::Instant::now() < until {
        match listener.accept() {
            Ok(_) => panic!("{name}, a socket of another user, was dialled"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("accept on {name}: {e}"),
        }
    }
}

/// `aaa.sock` and `zzz.sock`, owned by `nobody`, sort before and after every
/// node: neither the dialling path nor the check that a peer still exists
/// connects to them, nor removes them; the two nodes of the user still mesh.
#[test]
fn a_socket_of_another_user_is_not_dialled() {
    let mesh = Mesh::new(None);
    make_dir(&mesh.dir(), 0o700);
    let foreign: Vec<_> = ["aaa", "zzz"]
        .into_iter()
        .map(|n| {
            let l = std::os::unix::net::UnixListener::bind(mesh.socket(n)).unwrap();
            (n, l)
        })
        .collect();
    if !can_chown(&mesh.socket("aaa")) || !can_chown(&mesh.socket("zzz")) {
        return;
    }
    let a = mesh.executor("exec-a", "demo.echo");
    let web = mesh.web("web-1");
    connected(&web, &["exec-a"]);
    let (st, t) = web.post(
        "/api/v1/tasks",
        json!({"kind": "demo.echo", "input": "mine", "wait_ms": 10000}),
    );
    assert_eq!((st, &t["output"]), (200, &json!("mine")), "{t}");
    // Both nodes have scanned the directory by now (they found each
    // other); a dial would wait in the backlog. Four more scans.
    for (name, l) in &foreign {
        never_dialled(name, l, Duration::from_secs(2));
        assert!(mesh.socket(name).exists(), "{name} was removed");
    }
    let (_, h) = web.get("/healthz");
    assert_eq!(
        h["bus"]["transports"]["socket"]["peers"],
        json!(["exec-a"]),
        "{h}"
    );
    drop((a, web));
}

/// Runs this test binary again as `nobody`, in the role `role`
/// (`connect:PATH` or `listen:PATH`, see `intruder`); returns the child.
fn intruder_as_nobody(role: &str) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "intruder", "--nocapture", "--test-threads", "1"])
        .env(INTRUDER, role)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// What the intruder saw: `closed` (the courier process hung up without a
/// byte), `answered` (it sent its hello) or why it saw nothing.
fn intruder_saw(child: std::process::Child) -> String {
    let out = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    out.lines()
        .find_map(|l| l.split_once("INTRUDER ").map(|(_, saw)| saw))
        .unwrap_or_else(|| panic!("the intruder said nothing: {out}"))
        .to_string()
}

/// A process of another user that connects to a node's socket (by a hard
/// link in a directory it can reach: the socket directory is closed to
/// it) is hung up on before the node says hello.
#[test]
fn a_peer_process_of_another_user_is_hung_up_on() {
    use std::os::unix::fs::PermissionsExt;
    let mesh = Mesh::new(None);
    let other = tempfile::tempdir().unwrap();
    if !can_chown(other.path()) {
        return;
    }
    let _a = mesh.executor("exec-a", "demo.echo");
    wait_for("exec-a's socket", T, || {
        mesh.socket("exec-a").exists().then_some(())
    });
    let link = other.path().join("in.sock");
    std::fs::hard_link(mesh.socket("exec-a"), &link).unwrap();
    std::fs::set_permissions(&link, std::fs::Permissions::from_mode(0o777)).unwrap();
    let saw = intruder_saw(intruder_as_nobody(&format!("connect:{}", link.display())));
    assert_eq!(saw, "closed");
}

/// A socket file of the user whose listening process is of another user
/// (`SO_PEERCRED` of the dialled connection) is hung up on before hello.
#[test]
fn a_dialled_peer_process_of_another_user_is_hung_up_on() {
    let mesh = Mesh::new(None);
    let other = tempfile::tempdir().unwrap();
    if !can_chown(other.path()) {
        return;
    }
    let _a = mesh.executor("exec-a", "demo.echo");
    wait_for("exec-a's socket", T, || {
        mesh.socket("exec-a").exists().then_some(())
    });
    let bound = other.path().join("zzz.sock");
    let child = intruder_as_nobody(&format!("listen:{}", bound.display()));
    wait_for("the intruder to listen", T, || bound.exists().then_some(()));
    // Moved into the directory and given to the user: the file passes the
    // owner check; the process behind it does not.
    std::fs::rename(&bound, mesh.socket("zzz")).unwrap();
    std::os::unix::fs::chown(mesh.socket("zzz"), Some(0), Some(0)).unwrap();
    assert_eq!(intruder_saw(child), "closed");
}

/// Not a test of its own: the peer of another user that the two tests
/// above start (as `nobody`) with `COURIER_TEST_SOCKET_INTRUDER` set. It
/// connects or listens, then says on stdout whether the courier process
/// hung up (`closed`) or sent its hello (`answered`).
#[test]
fn intruder() {
    use std::io::Read;
    let Ok(role) = std::env::var(INTRUDER) else {
        return;
    };
    let (how, path) = role.split_once(':').unwrap();
    let mut stream = match how {
        "connect" => UnixStream::connect(path).unwrap(),
        "listen" => {
            let l = std::os::unix::net::UnixListener::bind(path).unwrap();
            l.set_nonblocking(true).unwrap();
            let until = std::time::Instant::now() + T;
            loop {
                match l.accept() {
                    Ok((s, _)) => break s,
                    Err(_) if std::time::Instant::now() < until => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => {
                        println!("INTRUDER not dialled: {e}");
                        return;
                    }
                }
            }
        }
        _ => panic!("{role}"),
    };
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 1024];
    let saw = match stream.read(&mut buf) {
        Ok(0) => "closed".to_string(),
        Ok(_) => "answered".to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => "closed".to_string(),
        Err(e) => format!("nothing: {e}"),
    };
    println!("INTRUDER {saw}");
}
