//! A deployment of real `courier` processes (a web node, executors) on a
//! real database and a real transport, and the audit that counts what
//! happened to a batch of tasks: finished, lost, finished twice, finished by
//! an executor that had been declared dead. Used by the chaos suite
//! (`tests/chaos.rs`) and the failover benchmark (`benches/failover.rs`).

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::procs::{wait_for, Proc};
use super::TestDb;

#[derive(Clone, Copy, Debug)]
pub enum Db {
    /// One SQLite file shared by every process.
    Sqlite,
    /// A schema of its own in the local PostgreSQL.
    Postgres,
}

#[derive(Clone, Copy, Debug)]
pub enum Wire {
    /// Unix sockets in a shared directory.
    Socket,
    /// The local RabbitMQ, under an exchange prefix of its own.
    Amqp,
    /// The shared PostgreSQL database (`--bus postgres`).
    Postgres,
    /// The hybrid: sockets within the host, PostgreSQL across hosts.
    SocketAndPostgres,
}

pub struct Fleet {
    pub db: String,
    bus: String,
    prefix: Option<String>,
    wire: Wire,
    /// On the simulated hosts of `tests/hosts/net.sh`: PostgreSQL and
    /// RabbitMQ are reached over the bridge, each process runs in the
    /// network namespace of its host.
    hosts: bool,
    _pg: Option<TestDb>,
    _dir: tempfile::TempDir,
}

/// The bridge address of this machine on the simulated hosts' network.
pub const BRIDGE: &str = "10.77.0.1";

/// The network namespace of simulated host `host` (`web`, `h1`…`h3`).
pub fn netns(host: &str) -> String {
    format!("courier-{host}")
}

/// The address of simulated host `host`.
pub fn host_ip(host: &str) -> &'static str {
    match host {
        "web" => "10.77.0.10",
        "h1" => "10.77.0.11",
        "h2" => "10.77.0.12",
        "h3" => "10.77.0.13",
        other => panic!("no simulated host {other}"),
    }
}

/// `tests/hosts/net.sh ARGS`: brings the simulated hosts up, cuts or heals
/// one host's link.
pub fn net(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hosts/net.sh");
    let st = std::process::Command::new(script)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    assert!(st.success(), "{script} {args:?}: {st}");
}

impl Fleet {
    pub fn new(db: Db, wire: Wire) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let (db, pg) = match db {
            Db::Sqlite => (
                format!("sqlite://{}", dir.path().join("c.db").display()),
                None,
            ),
            Db::Postgres => {
                let pg = actix::System::new().block_on(TestDb::postgres());
                (pg.process_url(), Some(pg))
            }
        };
        let (bus, prefix) = match wire {
            Wire::Socket => (
                format!("socket:{}", dir.path().join("sockets").display()),
                None,
            ),
            Wire::Amqp => (
                super::amqp_url(),
                Some(format!("courier_t_{}", uuid::Uuid::new_v4().simple())),
            ),
            Wire::Postgres => ("postgres".to_string(), None),
            Wire::SocketAndPostgres => (
                format!("socket:{},postgres", dir.path().join("sockets").display()),
                None,
            ),
        };
        Fleet {
            db,
            bus,
            prefix,
            wire,
            hosts: false,
            _pg: pg,
            _dir: dir,
        }
    }

    /// A fleet on PostgreSQL whose processes run on the simulated hosts
    /// (`tests/hosts/net.sh up` first): the database and the broker are
    /// reached at the bridge address, and each host of the hybrid has a
    /// socket directory of its own.
    pub fn on_hosts(wire: Wire) -> Fleet {
        net(&["up"]);
        let mut fleet = Fleet::new(Db::Postgres, wire);
        fleet.db = fleet.db.replacen("@127.0.0.1:", &format!("@{BRIDGE}:"), 1);
        assert!(fleet.db.contains(BRIDGE), "{}", fleet.db);
        if matches!(wire, Wire::Amqp) {
            fleet.bus = format!("amqp://courier:courier@{BRIDGE}:5672/%2f");
        }
        fleet.hosts = true;
        fleet
    }

    fn args(&self, role: &str, node: &str, host: Option<&str>) -> Vec<String> {
        let bus = match (host, self.wire) {
            (Some(h), Wire::SocketAndPostgres) => format!(
                "socket:{},postgres",
                self._dir.path().join(format!("sockets-{h}")).display()
            ),
            _ => self.bus.clone(),
        };
        let mut args: Vec<String> = vec![
            role.into(),
            "--db".into(),
            self.db.clone(),
            "--bus".into(),
            bus,
            "--node".into(),
            node.into(),
        ];
        if let Some(p) = &self.prefix {
            args.extend(["--amqp-prefix".into(), p.clone()]);
        }
        args
    }

    /// An executor process running the demo kinds on simulated host
    /// `host` (their `log` confined to the system's temporary directory,
    /// where the tests' own temporary directories are, unless `extra`
    /// names a `--demo-log-dir`).
    pub fn executor_on(&self, host: &str, node: &str, extra: &[&str]) -> Proc {
        assert!(self.hosts, "a fleet made with Fleet::on_hosts");
        let mut args = self.args("executor", node, Some(host));
        args.push("--demo".into());
        args.extend(demo_log_dir(extra));
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::start_under(node, &["ip", "netns", "exec", &netns(host)], &args)
    }

    /// A web process on simulated host `web`, serving HTTP on the host's
    /// address (reached from here over the bridge).
    pub fn web_on_host(&self, node: &str) -> Proc {
        assert!(self.hosts, "a fleet made with Fleet::on_hosts");
        let mut args = self.args("web", node, Some("web"));
        // Open on purpose: the bridge is this machine's own test network.
        args.extend([
            "--listen".into(),
            format!("{}:0", host_ip("web")),
            "--insecure-no-auth".into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::start_under(node, &["ip", "netns", "exec", &netns("web")], &args)
    }

    /// An executor process running the demo kinds, with `extra` options.
    pub fn executor(&self, node: &str, extra: &[&str]) -> Proc {
        self.executor_under(&[], node, extra)
    }

    /// An executor process started under `wrapper` (see `Proc::start_under`).
    pub fn executor_under(&self, wrapper: &[&str], node: &str, extra: &[&str]) -> Proc {
        let mut args = self.args("executor", node, None);
        args.push("--demo".into());
        args.extend(demo_log_dir(extra));
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::start_under(node, wrapper, &args)
    }

    /// The exchange prefix on the broker (AMQP fleets only).
    pub fn amqp_prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// Runs one SQL statement on the fleet's PostgreSQL database, outside
    /// courier: for a test that moves time instead of waiting.
    pub fn raw(&self, sql: &str) {
        let pg = self._pg.as_ref().expect("a PostgreSQL fleet");
        actix::System::new().block_on(pg.raw(sql));
    }

    /// A web process (no executor).
    pub fn web(&self, node: &str) -> Proc {
        let args = self.args("web", node, None);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::start(node, &args)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(prefix) = self.prefix.take() {
            let _ = std::thread::spawn(move || {
                actix::System::new().block_on(super::amqp_cleanup(&prefix, &[]))
            })
            .join();
        }
    }
}

/// Waits until `web` answers a waiting request, which needs an executor
/// and a route to it.
pub fn ready(web: &Proc, timeout: Duration) {
    wait_for("a synchronous answer", timeout, || {
        let (st, _) = web.post(
            "/api/v1/tasks",
            json!({"kind": "demo.echo", "input": "ready?", "wait_ms": 2000}),
        );
        (st == 200).then_some(())
    });
}

/// Creates `n` `demo.sleep` tasks of `ms(i)` milliseconds; returns their ids.
pub fn sleeps(web: &Proc, n: usize, ms: impl Fn(usize) -> u64) -> Vec<String> {
    (0..n)
        .map(|i| {
            let (st, t) = web.post(
                "/api/v1/tasks",
                json!({"kind": "demo.sleep", "input": {"ms": ms(i)}}),
            );
            assert_eq!(st, 201, "{t}");
            t["id"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Tasks in `state` in the store, from the web node's `/metrics`.
pub fn count(web: &Proc, state: &str) -> u64 {
    let (_, m) = web.get("/metrics");
    let needle = format!("courier_tasks{{state=\"{state}\"}} ");
    m.as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Every executor the store knows, by id.
pub fn executors(web: &Proc) -> HashMap<String, Value> {
    let (_, ex) = web.get("/api/v1/executors");
    ex["executors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

/// The alive executor of node `node` (its id changes when it is declared
/// dead and comes back).
pub fn alive_executor_of(web: &Proc, node: &str) -> Option<String> {
    executors(web)
        .into_values()
        .find(|e| e["node"] == node && e["state"] == "alive")
        .map(|e| e["id"].as_str().unwrap().to_string())
}

/// How many tasks in `state` executor `id` holds.
pub fn held_by(web: &Proc, id: &str, state: &str) -> usize {
    let (_, l) = web.get(&format!("/api/v1/tasks?state={state}&limit=500"));
    l["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["executor_id"] == id)
        .count()
}

/// The node of an executor id (`<node>-<suffix>`).
pub fn node_of(executor_id: &str) -> &str {
    executor_id
        .rsplit_once('-')
        .map(|(n, _)| n)
        .unwrap_or(executor_id)
}

pub fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()?.parse().ok()
}

/// What happened to a batch of tasks, read back from the store through the
/// API once every task is final or the time is up.
#[derive(Debug, Default)]
pub struct Audit {
    pub tasks: usize,
    /// Final, once, with the state asked for.
    pub finished: usize,
    /// Not final when the time was up.
    pub lost: Vec<String>,
    /// More than one final line in the history.
    pub twice: Vec<String>,
    /// Final in another state than the one asked for.
    pub wrong: Vec<String>,
    /// Finished by an executor that had been declared dead before, or by
    /// one that did not hold the task.
    pub fenced: Vec<String>,
    /// Started more than once (taken over or handed back, then run again).
    pub rerun: usize,
    /// History lines `running → pending` made by another executor than the
    /// holder: the takeovers, as (task, dead holder, taker, when).
    pub takeovers: Vec<(String, String, String, DateTime<Utc>)>,
    /// The first time each task started running again after a takeover.
    pub reruns_at: Vec<DateTime<Utc>>,
}

impl Audit {
    /// Waits until every task of `ids` is final (or `timeout`), then reads
    /// each one's history.
    pub fn of(web: &Proc, ids: &[String], state: &str, timeout: Duration) -> Audit {
        let start = Instant::now();
        let mut open: HashSet<&String> = ids.iter().collect();
        while !open.is_empty() && start.elapsed() < timeout {
            open.retain(|id| {
                let (st, t) = web.get(&format!("/api/v1/tasks/{id}"));
                !(st == 200
                    && matches!(
                        t["state"].as_str(),
                        Some("succeeded" | "failed" | "cancelled")
                    ))
            });
            if !open.is_empty() {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let execs = executors(web);
        let mut a = Audit {
            tasks: ids.len(),
            lost: open.iter().map(|s| s.to_string()).collect(),
            ..Audit::default()
        };
        for id in ids {
            if open.contains(id) {
                continue;
            }
            let (_, h) = web.get(&format!("/api/v1/tasks/{id}/history"));
            let lines = h["history"].as_array().unwrap();
            let finals: Vec<&Value> = lines
                .iter()
                .filter(|e| {
                    matches!(
                        e["to_state"].as_str(),
                        Some("succeeded" | "failed" | "cancelled")
                    )
                })
                .collect();
            let starts = lines
                .iter()
                .filter(|e| e["from_state"] == "pending" && e["to_state"] == "running")
                .count();
            if starts > 1 {
                a.rerun += 1;
            }
            let mut taken = None;
            for e in lines {
                let (by, owner) = (&e["changed_by"], &e["owner"]);
                if e["to_state"] == "pending" && !owner.is_null() && by != owner {
                    let at = time(&e["at"]).unwrap();
                    a.takeovers.push((
                        id.clone(),
                        owner.as_str().unwrap().into(),
                        by.as_str().unwrap_or_default().into(),
                        at,
                    ));
                    taken = Some(at);
                } else if e["to_state"] == "running" && taken.is_some() {
                    a.reruns_at.push(time(&e["at"]).unwrap());
                    taken = None;
                }
            }
            if finals.len() > 1 {
                a.twice.push(id.clone());
                continue;
            }
            let last = finals[0];
            if last["to_state"] != state {
                a.wrong.push(id.clone());
                continue;
            }
            // The finisher must hold the task, and must not have been
            // declared dead before it wrote.
            let by = last["changed_by"].as_str().unwrap_or_default();
            let at = time(&last["at"]).unwrap();
            let declared_dead_before = execs.get(by).is_some_and(|e| {
                e["state"] == "dead" && time(&e["ended_at"]).is_some_and(|t| t <= at)
            });
            if last["owner"].as_str() != Some(by) || declared_dead_before {
                a.fenced.push(id.clone());
                continue;
            }
            a.finished += 1;
        }
        a
    }

    /// There were takeovers, and every one took a task from `holder`.
    pub fn assert_taken_over_from(&self, holder: &str) {
        assert!(
            !self.takeovers.is_empty() && self.takeovers.iter().all(|(_, h, _, _)| h == holder),
            "{holder}'s running tasks were taken over, and no other's: {:?}",
            self.takeovers
        );
    }

    /// Every task finished exactly once, in the state asked for; none lost,
    /// none finished twice, none finished by a fenced executor.
    pub fn assert_exactly_once(&self) {
        assert!(
            self.finished == self.tasks
                && self.lost.is_empty()
                && self.twice.is_empty()
                && self.wrong.is_empty()
                && self.fenced.is_empty(),
            "{} tasks: {} finished exactly once; lost {:?}; finished twice {:?}; wrong end {:?}; finished by a fenced executor {:?}",
            self.tasks,
            self.finished,
            self.lost,
            self.twice,
            self.wrong,
            self.fenced
        );
    }
}

/// Checks that no history line of `ids` was written by executor `zombie`
/// after it was declared dead (the `dead` executor record): `Audit` checks
/// the finishes, this every line.
pub fn assert_nothing_written_after_death(web: &Proc, ids: &[String], zombie: &str, dead: &Value) {
    let ended = time(&dead["ended_at"]).unwrap();
    for id in ids {
        let (_, h) = web.get(&format!("/api/v1/tasks/{id}/history"));
        for e in h["history"].as_array().unwrap() {
            let at = time(&e["at"]).unwrap();
            assert!(
                !(e["changed_by"] == zombie && at > ended),
                "the zombie wrote after it was declared dead: {e}"
            );
        }
    }
}

/// Seconds from `t0` to `t`.
pub fn secs_after(t0: SystemTime, t: DateTime<Utc>) -> f64 {
    let t0: DateTime<Utc> = t0.into();
    (t - t0).num_microseconds().unwrap_or(0) as f64 / 1e6
}

/// `--demo-log-dir` with the system's temporary directory, unless `extra`
/// gives one: the tests write their logs in temporary directories.
fn demo_log_dir(extra: &[&str]) -> Vec<String> {
    if extra.contains(&"--demo-log-dir") {
        return Vec::new();
    }
    vec![
        "--demo-log-dir".into(),
        std::env::temp_dir().display().to_string(),
    ]
}
