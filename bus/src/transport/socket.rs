//! The Unix-socket transport: processes on one host, one socket each.
//!
//! Every process binds `DIR/<node>.sock` and connects to the sockets of the
//! other processes it finds in `DIR`, rescanning every half second, so any
//! number of processes form a mesh and processes that come and go are picked
//! up without a restart. Between two nodes there is one connection: the
//! node whose name sorts first dials, the other accepts.
//!
//! # Wire format
//!
//! A connection carries frames in both directions. A frame is a 4-byte
//! big-endian length `n` followed by `n` bytes of UTF-8 JSON (at most
//! [`MAX_FRAME`] bytes). The JSON is an object tagged by `t`:
//!
//! | `t`        | fields                          | meaning |
//! |------------|---------------------------------|---------|
//! | `hello`    | `v` (1), `node`, `ads`          | first frame each side sends: who I am and what I serve |
//! | `announce` | `ads`                           | what I serve changed |
//! | `env`      | `env`: an [`Envelope`]          | a message for an address this peer serves |
//!
//! `ads` is `{"pools": [names], "executors": [ids]}` (see
//! [`Advertisement`]). Routing by address: `web/<node>/…` goes to that node;
//! `pool/<name>` to one peer that advertises the pool, round robin;
//! `executor/<id>` to the peer that advertises it; `task/<id>` to every peer
//! (only the one running the task has it registered; the others drop it).
//!
//! A frame that is not valid JSON of this shape, an envelope of a newer
//! version, or a length over the limit closes that connection with a logged
//! error; the process goes on, and the dialer reconnects with backoff.
//! Messages in flight on a closed connection are lost; courier's durable
//! state makes that harmless. A socket file whose process is gone (it
//! refuses connections twice, a second apart) is removed; a process binds
//! under a temporary name and renames the socket into place once it
//! listens, so a live socket is never taken for a dead one.
//!
//! # Trust
//!
//! Only processes of the same user form a mesh. The directory is created
//! 0700 when missing; an existing one is refused at start when it is a
//! symlink, not a directory, owned by another user than the process's
//! effective uid, or writable by group or others. A `*.sock` is dialled only
//! when it is a socket (not a symlink) owned by that uid, and a connection,
//! dialled or accepted, is kept only when the peer's credentials
//! (`SO_PEERCRED`) carry that uid; the others are skipped with a warning.

use std::collections::HashMap;
use std::io;
use std::marker::PhantomData;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use super::{Advertisement, Distance, Transport};
use crate::address::Address;
use crate::backoff::Backoff;
use crate::envelope::Envelope;
use crate::error::TransportError;
use crate::router::BusHandle;

/// The largest frame accepted or sent (16 MiB).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;
/// Frames queued for one peer before sends to it fail.
const PEER_QUEUE: usize = 8192;
const SCAN_EVERY: Duration = Duration::from_millis(500);
/// How often a node checks that an unconnected peer which should dial it
/// still exists.
const LIVENESS_EVERY: Duration = Duration::from_secs(3);
const WIRE_VERSION: u16 = 1;

#[derive(Serialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum OutFrame<'a, B> {
    Hello {
        v: u16,
        node: &'a str,
        ads: &'a Advertisement,
    },
    Announce {
        ads: &'a Advertisement,
    },
    Env {
        env: &'a Envelope<B>,
    },
}

#[derive(Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum InFrame<B> {
    Hello {
        v: u16,
        node: String,
        ads: Advertisement,
    },
    Announce {
        ads: Advertisement,
    },
    Env {
        env: Envelope<B>,
    },
}

struct Peer {
    conn: u64,
    tx: mpsc::Sender<Bytes>,
    ads: Advertisement,
}

#[derive(Default)]
struct Table {
    peers: HashMap<String, Peer>,
    /// What this process serves, sent in every hello.
    ads: Advertisement,
}

struct Shared {
    node: String,
    dir: PathBuf,
    /// The effective uid of this process: the only owner of sockets and
    /// peers it trusts.
    euid: u32,
    table: Mutex<Table>,
    next_conn: AtomicU64,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The transport; add it to a bus with
/// [`BusHandle::add_transport`](crate::BusHandle::add_transport).
pub struct SocketTransport<B> {
    shared: Arc<Shared>,
    round_robin: usize,
    _body: PhantomData<fn(B) -> B>,
}

fn frame<T: Serialize>(f: &T) -> Result<Bytes, TransportError> {
    let v = serde_json::to_vec(f).map_err(|e| TransportError::Encode(e.to_string()))?;
    if v.len() > MAX_FRAME {
        return Err(TransportError::TooLarge {
            size: v.len(),
            limit: MAX_FRAME,
        });
    }
    Ok(Bytes::from(v))
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// The socket path of `node` in `dir`.
pub fn socket_path(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("{node}.sock"))
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Creates `dir` (mode 0700) when it is missing, then checks that it is a
/// directory of this user that nobody else can write to: anyone who can put
/// a socket there is dialled as a peer.
fn secure_dir(dir: &Path, euid: u32) -> Result<(), TransportError> {
    let refuse = |why: String| {
        TransportError::Other(format!("socket directory {} refused: {why}", dir.display()))
    };
    if let Err(e) = std::fs::symlink_metadata(dir) {
        if e.kind() != io::ErrorKind::NotFound {
            return Err(refuse(format!("cannot read it: {e}")));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| refuse(format!("cannot create it: {e}")))?;
    }
    // Checked again when just created: another process may have made it.
    let m = std::fs::symlink_metadata(dir).map_err(|e| refuse(format!("cannot read it: {e}")))?;
    if m.file_type().is_symlink() {
        return Err(refuse(
            "it is a symbolic link; give the real directory".into(),
        ));
    }
    if !m.is_dir() {
        return Err(refuse("it is not a directory".into()));
    }
    if m.uid() != euid {
        return Err(refuse(format!(
            "it is owned by uid {}, not by this process's uid {euid}",
            m.uid()
        )));
    }
    if m.mode() & 0o022 != 0 {
        return Err(refuse(format!(
            "it is writable by group or others (mode {:o}); make it 0700",
            m.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Why the socket file at `path` must not be dialled, if it must not: it is
/// not a socket (a symlink, say) or another user owns it.
fn untrusted_file(path: &Path, euid: u32) -> Option<String> {
    match std::fs::symlink_metadata(path) {
        Err(e) => Some(format!("cannot read it: {e}")),
        Ok(m) if !m.file_type().is_socket() => Some("it is not a socket".into()),
        Ok(m) if m.uid() != euid => Some(format!("it is owned by uid {}, not {euid}", m.uid())),
        Ok(_) => None,
    }
}

/// Why the process at the other end of `stream` is not trusted, if it is
/// not: its credentials (`SO_PEERCRED`) carry another uid than ours.
fn untrusted_peer(stream: &UnixStream, euid: u32) -> Option<String> {
    match stream.peer_cred() {
        Ok(c) if c.uid() == euid => None,
        Ok(c) => Some(match c.pid() {
            Some(pid) => format!("its process {pid} runs as uid {}, not {euid}", c.uid()),
            None => format!("its process runs as uid {}, not {euid}", c.uid()),
        }),
        Err(e) => Some(format!("cannot read its credentials: {e}")),
    }
}

impl<B> SocketTransport<B>
where
    B: Serialize + DeserializeOwned + Send + 'static,
{
    /// Binds `DIR/<node>.sock` (removing a stale file of a dead process with
    /// the same node name), starts accepting peers and scanning `dir` for
    /// more. Must run inside an actix or tokio runtime. Creates `dir` 0700
    /// when missing; fails when it is not a directory of this user closed to
    /// others (see the module's "Trust"), or when a live process already
    /// holds this node's socket.
    pub async fn start(
        dir: impl AsRef<Path>,
        node: &str,
        bus: BusHandle<B>,
    ) -> Result<SocketTransport<B>, TransportError> {
        let dir = dir.as_ref().to_path_buf();
        let euid = euid();
        secure_dir(&dir, euid)?;
        let path = socket_path(&dir, node);
        let io_error = |what: &str, e: io::Error| {
            TransportError::Other(format!("{what} {}: {e}", path.display()))
        };
        if std::fs::symlink_metadata(&path).is_ok() {
            if UnixStream::connect(&path).await.is_ok() {
                return Err(TransportError::Other(format!(
                    "{} belongs to a live process: node names must be unique",
                    path.display()
                )));
            }
            tracing::info!(path = %path.display(), "removing a stale socket of this node name");
            let _ = std::fs::remove_file(&path);
        }
        // Bind under a temporary name and move it into place once it
        // listens: a peer must never find `<node>.sock` refusing connections
        // (it would take it for the socket of a dead process and remove it).
        let tmp = dir.join(format!(".{node}.{}.binding", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp).map_err(|e| io_error("cannot bind", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io_error("cannot move the socket to", e))?;
        let shared = Arc::new(Shared {
            node: node.to_string(),
            dir,
            euid,
            table: Mutex::new(Table::default()),
            next_conn: AtomicU64::new(1),
        });
        let accept_shared = shared.clone();
        let accept_bus = bus.clone();
        tokio::task::spawn_local(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        if let Some(why) = untrusted_peer(&stream, accept_shared.euid) {
                            tracing::warn!(reason = %why, "socket connection from another user refused");
                            continue;
                        }
                        tokio::task::spawn_local(connection(
                            stream,
                            accept_shared.clone(),
                            accept_bus.clone(),
                            None,
                        ));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "socket accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tokio::task::spawn_local(discover(shared.clone(), bus));
        tracing::info!(socket = %path.display(), "socket transport listening");
        Ok(SocketTransport {
            shared,
            round_robin: 0,
            _body: PhantomData,
        })
    }
}

/// Dials the peers in `dir` whose names sort after ours, with backoff, and
/// removes sockets of processes that are gone.
async fn discover<B>(shared: Arc<Shared>, bus: BusHandle<B>)
where
    B: Serialize + DeserializeOwned + Send + 'static,
{
    // When each peer may be dialled again, and the waits of those that
    // failed.
    let mut not_before: HashMap<String, Instant> = HashMap::new();
    let mut backoff: HashMap<String, Backoff> = HashMap::new();
    // Sockets that refused a connection, and when: one is removed only when
    // it refuses again at least a second later.
    let mut refused: HashMap<String, Instant> = HashMap::new();
    // Peers skipped as not of this user, and why: warned about once for
    // each reason, not at every scan.
    let mut distrusted: HashMap<String, String> = HashMap::new();
    loop {
        let entries = match std::fs::read_dir(&shared.dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(dir = %shared.dir.display(), error = %e, "cannot scan the socket directory");
                tokio::time::sleep(SCAN_EVERY).await;
                continue;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(peer) = name.strip_suffix(".sock") else {
                continue;
            };
            if peer == shared.node.as_str() || shared.table().peers.contains_key(peer) {
                continue;
            }
            if not_before.get(peer).is_some_and(|at| Instant::now() < *at) {
                continue;
            }
            // Never connect to (nor remove) a socket another user put here.
            if let Some(why) = untrusted_file(&entry.path(), shared.euid) {
                distrust(&mut distrusted, peer, why);
                continue;
            }
            if peer < shared.node.as_str() {
                // That node dials us. If it has not, check now and then
                // that it still exists, so that its socket file does not
                // outlive it when it sorts first.
                match UnixStream::connect(entry.path()).await {
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        if gone(&mut refused, peer) {
                            tracing::info!(peer, "removing the socket of a node that is gone");
                            let _ = std::fs::remove_file(entry.path());
                        }
                    }
                    _ => {
                        refused.remove(peer);
                        not_before.insert(peer.to_string(), Instant::now() + LIVENESS_EVERY);
                    }
                }
                continue;
            }
            match UnixStream::connect(entry.path()).await {
                Ok(stream) => {
                    refused.remove(peer);
                    if let Some(why) = untrusted_peer(&stream, shared.euid) {
                        distrust(&mut distrusted, peer, why);
                        not_before.insert(peer.to_string(), Instant::now() + LIVENESS_EVERY);
                        continue;
                    }
                    distrusted.remove(peer);
                    not_before.remove(peer);
                    backoff.remove(peer);
                    tokio::task::spawn_local(connection(
                        stream,
                        shared.clone(),
                        bus.clone(),
                        Some(peer.to_string()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    // Nobody listens: the process that bound it is gone.
                    if gone(&mut refused, peer) {
                        tracing::info!(peer, "removing the socket of a node that is gone");
                        let _ = std::fs::remove_file(entry.path());
                        not_before.remove(peer);
                        backoff.remove(peer);
                    }
                }
                Err(e) => {
                    let delay = backoff
                        .entry(peer.to_string())
                        .or_insert_with(|| {
                            Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
                        })
                        .next_delay();
                    tracing::debug!(peer, error = %e, retry_in_ms = delay.as_millis() as u64, "cannot reach peer");
                    not_before.insert(peer.to_string(), Instant::now() + delay);
                }
            }
        }
        tokio::time::sleep(SCAN_EVERY).await;
    }
}

/// Records that `peer` is skipped because of `why`; warns when that is new.
fn distrust(distrusted: &mut HashMap<String, String>, peer: &str, why: String) {
    if distrusted.get(peer) != Some(&why) {
        tracing::warn!(peer, reason = %why, "socket peer is not of this user; not connecting");
        distrusted.insert(peer.to_string(), why);
    }
}

/// Records a refused connection to `peer`; true when it also refused at
/// least a second ago, so that the socket can be taken for a dead one.
fn gone(refused: &mut HashMap<String, Instant>, peer: &str) -> bool {
    match refused.get(peer) {
        Some(first) if first.elapsed() >= Duration::from_secs(1) => {
            refused.remove(peer);
            true
        }
        Some(_) => false,
        None => {
            refused.insert(peer.to_string(), Instant::now());
            false
        }
    }
}

/// Runs one connection until it closes: hello both ways, then frames.
async fn connection<B>(
    stream: UnixStream,
    shared: Arc<Shared>,
    bus: BusHandle<B>,
    dialed: Option<String>,
) where
    B: Serialize + DeserializeOwned + Send + 'static,
{
    let (r, w) = stream.into_split();
    let mut reader = FramedRead::new(r, codec());
    let mut writer = FramedWrite::new(w, codec());
    // What the hello says we serve; if it changes before this peer is in
    // the table (and so misses the announce), it is told below.
    let (hello, hello_ads) = {
        let t = shared.table();
        let hello: OutFrame<'_, B> = OutFrame::Hello {
            v: WIRE_VERSION,
            node: &shared.node,
            ads: &t.ads,
        };
        (frame(&hello), t.ads.clone())
    };
    let Ok(hello) = hello else { return };
    if writer.send(hello).await.is_err() {
        return;
    }
    let peer = match tokio::time::timeout(Duration::from_secs(5), reader.next()).await {
        Ok(Some(Ok(bytes))) => match serde_json::from_slice::<InFrame<B>>(&bytes) {
            Ok(InFrame::Hello { v, node, ads })
                if v <= WIRE_VERSION && Address::web(&node, "x").is_ok() =>
            {
                (node, ads)
            }
            Ok(_) => {
                tracing::warn!(
                    ?dialed,
                    "socket peer did not start with a valid hello; closing"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(?dialed, error = %e, "malformed first frame on the socket; closing");
                return;
            }
        },
        Ok(Some(Err(e))) => {
            tracing::warn!(?dialed, error = %e, "broken frame on the socket; closing");
            return;
        }
        _ => return,
    };
    let (name, ads) = peer;
    if let Some(d) = &dialed {
        if *d != name {
            tracing::warn!(expected = %d, got = %name, "socket peer has another name than its file; closing");
            return;
        }
    }
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Bytes>(PEER_QUEUE);
    {
        let mut t = shared.table();
        if t.ads != hello_ads {
            let announce: OutFrame<'_, B> = OutFrame::Announce { ads: &t.ads };
            if let Ok(f) = frame(&announce) {
                let _ = tx.try_send(f);
            }
        }
        t.peers.insert(name.clone(), Peer { conn, tx, ads });
    }
    tracing::info!(peer = %name, "socket peer connected");
    let writer_task = tokio::task::spawn_local(async move {
        while let Some(f) = rx.recv().await {
            if let Err(e) = writer.send(f).await {
                tracing::debug!(error = %e, "socket write failed");
                break;
            }
        }
    });
    loop {
        match reader.next().await {
            None => break,
            Some(Err(e)) => {
                tracing::error!(peer = %name, error = %e, "broken or oversized frame; closing the connection");
                break;
            }
            Some(Ok(bytes)) => match serde_json::from_slice::<InFrame<B>>(&bytes) {
                Ok(InFrame::Env { env }) => {
                    if env.is_supported() {
                        bus.inbound(env);
                    } else {
                        tracing::error!(peer = %name, v = env.v, "envelope of an unsupported version; closing the connection");
                        break;
                    }
                }
                Ok(InFrame::Announce { ads }) => {
                    if let Some(p) = shared.table().peers.get_mut(&name) {
                        if p.conn == conn {
                            p.ads = ads;
                        }
                    }
                }
                Ok(InFrame::Hello { .. }) => {
                    tracing::error!(peer = %name, "second hello; closing the connection");
                    break;
                }
                Err(e) => {
                    tracing::error!(peer = %name, error = %e, "malformed frame; closing the connection");
                    break;
                }
            },
        }
    }
    {
        let mut t = shared.table();
        if t.peers.get(&name).is_some_and(|p| p.conn == conn) {
            t.peers.remove(&name);
        }
    }
    writer_task.abort();
    tracing::info!(peer = %name, "socket peer disconnected");
}

impl<B> Transport<B> for SocketTransport<B>
where
    B: Serialize + DeserializeOwned + Send + 'static,
{
    fn name(&self) -> &'static str {
        "socket"
    }

    fn distance(&self) -> Distance {
        Distance::SameHost
    }

    fn reaches(&self, to: &Address) -> bool {
        let t = self.shared.table();
        match to {
            Address::Web { node, .. } => t.peers.contains_key(node),
            Address::Pool(name) => t.peers.values().any(|p| p.ads.pools.contains(name)),
            Address::Executor(id) => t.peers.values().any(|p| p.ads.executors.contains(id)),
            Address::Task(_) => !t.peers.is_empty(),
        }
    }

    fn send(&mut self, envelope: Envelope<B>) -> Result<(), TransportError> {
        let bytes = frame(&OutFrame::Env { env: &envelope })?;
        let t = self.shared.table();
        let targets: Vec<&Peer> = match &envelope.to {
            Address::Web { node, .. } => t.peers.get(node).into_iter().collect(),
            Address::Executor(id) => t
                .peers
                .values()
                .filter(|p| p.ads.executors.contains(id))
                .take(1)
                .collect(),
            Address::Pool(name) => {
                let mut members: Vec<(&String, &Peer)> = t
                    .peers
                    .iter()
                    .filter(|(_, p)| p.ads.pools.contains(name))
                    .collect();
                members.sort_by(|a, b| a.0.cmp(b.0));
                if members.is_empty() {
                    Vec::new()
                } else {
                    self.round_robin = self.round_robin.wrapping_add(1);
                    vec![members[self.round_robin % members.len()].1]
                }
            }
            Address::Task(_) => t.peers.values().collect(),
        };
        if targets.is_empty() {
            return Err(TransportError::Disconnected);
        }
        let mut sent = false;
        for p in targets {
            match p.tx.try_send(bytes.clone()) {
                Ok(()) => sent = true,
                Err(e) => {
                    tracing::warn!(error = %e, "socket peer queue full or closed; message dropped")
                }
            }
        }
        if sent {
            Ok(())
        } else {
            Err(TransportError::Disconnected)
        }
    }

    fn peers(&self) -> Vec<String> {
        let mut v: Vec<String> = self.shared.table().peers.keys().cloned().collect();
        v.sort();
        v
    }

    fn advertise(&mut self, ads: &Advertisement) {
        let mut t = self.shared.table();
        if t.ads == *ads {
            return;
        }
        t.ads = ads.clone();
        let announce: OutFrame<'_, B> = OutFrame::Announce { ads };
        if let Ok(f) = frame(&announce) {
            for p in t.peers.values() {
                let _ = p.tx.try_send(f.clone());
            }
        }
    }
}

impl<B> Drop for SocketTransport<B> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(socket_path(&self.shared.dir, &self.shared.node));
    }
}
