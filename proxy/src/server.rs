//! The server skeleton every listener shares (pod mode's console and internal
//! ports, standalone mode, replay): accept with backoff, admit each connection
//! into a slot, time out HTTP connections that idle or dawdle, and stop
//! accepting on cancellation while the caller's [`TaskTracker`] drains.
//!
//! # Admission
//!
//! Connections are counted in two pools, because they cost different things
//! and different people can open them:
//!
//! * **Pending**: HTTP connections not upgraded to a WebSocket. Anyone who
//!   reaches the port can open one, so they are capped per [`Source`] and in
//!   total, and must send each complete request head within the request
//!   timeout of opening or of their previous response.
//! * **Upgraded**: WebSockets, which in pod mode only the right token opens
//!   ([`Conn::upgrade`]). Capped in total; past it, the upgrade gets 503.
//!
//! A full pending pool does not make a newcomer wait behind the connections
//! that filled it (mini-redis's permit-before-accept did: 32 idle keep-alive
//! connections locked the viewer, and the kubelet's probes, out). It
//! *evicts* one instead: from the newcomer's own source when that source is
//! at its cap, otherwise from the source holding the most; within it, an idle
//! connection (no request in flight) before a busy one, the oldest first.
//!
//! Evicting on every arrival would let a flood cycle the pool as fast as the
//! CPU allows, so that a newcomer, the viewer included, might be evicted
//! before it was even read. So nobody is evicted before [`MIN_LIFE`]: when
//! every candidate is younger, accepting pauses until the oldest comes of
//! age. Each connection thus gets at least [`MIN_LIFE`] to send its request
//! head, and the pool turns over at most `cap / MIN_LIFE` times a second,
//! which bounds how long a newcomer waits in the kernel's accept queue
//! behind a flood. Per-source caps keep one client from holding every slot,
//! but behind a Service or an ingress every client may share one address;
//! eviction, not the per-source cap, is what keeps the viewer's way in open.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::http::{self as web, Body};
use crate::source::Source;

/// The least time a pending connection is left alone, to send its request
/// head, before a newcomer may evict it.
pub const MIN_LIFE: Duration = Duration::from_secs(1);

/// A listener's caps and timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections not upgraded to a WebSocket, at most.
    pub max_pending: usize,
    /// ... of them from one [`Source`].
    pub max_pending_per_source: usize,
    /// WebSockets at most.
    pub max_upgraded: usize,
    /// A connection not upgraded must send each complete request head within
    /// this long of opening or of its previous response; else it is closed.
    pub request_timeout: Duration,
}

/// When a listener stops: it accepts until `accepting` is cancelled, and its
/// connections (not yet upgraded) last until `connections` is. The same token
/// twice, except for standalone mode's `--timeout`, which stops accepting
/// but lets open connections finish.
#[derive(Clone, Debug)]
pub struct Stop {
    pub accepting: CancellationToken,
    pub connections: CancellationToken,
}

impl Stop {
    pub fn both(token: &CancellationToken) -> Self {
        Self {
            accepting: token.clone(),
            connections: token.clone(),
        }
    }
}

/// Accepts on `listener` until `stop.accepting`, and runs `handle` for each
/// admitted connection in `tasks`, until it returns, its connection is
/// evicted, or `stop.connections`. Returns (dropping the listener, so new
/// connections are refused) once it stops accepting.
pub async fn run<H, F>(
    listener: TcpListener,
    limits: Limits,
    stop: Stop,
    tasks: TaskTracker,
    mut handle: H,
) where
    H: FnMut(TcpStream, Conn) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let pool = Arc::new(Pool::new(limits));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = stop.accepting.cancelled() => return,
        };
        // RFB is chatty with small messages: latency beats batching.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let source = Source::of(peer.ip());
        let entry = loop {
            // Asked for before looking, so a slot freed in between wakes us.
            let freed = pool.freed.notified();
            match pool.admit(source, Instant::now()) {
                Room::Admitted(entry) => break entry,
                Room::WaitUntil(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = freed => {}
                        () = stop.accepting.cancelled() => return,
                    }
                }
            }
        };
        let conn = Conn {
            peer,
            entry: entry.clone(),
            pool: pool.clone(),
        };
        let served = handle(stream, conn);
        let (stop, pool) = (stop.connections.clone(), pool.clone());
        tasks.spawn(
            async move {
                let _registered = Registered { pool, id: entry.id };
                tokio::select! {
                    () = served => {}
                    () = entry.evict.cancelled() => tracing::debug!("evicted"),
                    () = stop.cancelled() => {}
                }
            }
            .instrument(tracing::debug_span!("connection", %peer)),
        );
    }
}

/// Accepts, retrying failures (out of file descriptors, aborted handshakes) with
/// a backoff that doubles up to a second.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    let mut backoff = Duration::from_millis(10);
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!(error = %e, ?backoff, "accept failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// An admitted connection, as its handler sees it.
#[derive(Clone, Debug)]
pub struct Conn {
    peer: SocketAddr,
    entry: Arc<Entry>,
    pool: Arc<Pool>,
}

/// The upgraded pool is full.
#[derive(Debug, thiserror::Error)]
#[error("too many WebSocket connections")]
pub struct Full;

/// A WebSocket's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Upgraded {
    _slot: OwnedSemaphorePermit,
}

impl Conn {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Moves the connection from the pending pool to the upgraded one: from
    /// here on it is never evicted. Call it once the upgrade is sure to be
    /// answered with 101, and keep the slot as long as the WebSocket.
    pub fn upgrade(&self) -> Result<Upgraded, Full> {
        let permit = self
            .pool
            .upgraded
            .clone()
            .try_acquire_owned()
            .map_err(|_| Full)?;
        self.pool.release(self.entry.id);
        Ok(Upgraded { _slot: permit })
    }

    /// Serves HTTP/1.1 on `io`, upgrades included, until the client is done
    /// or it leaves the request timeout without a complete request head (the
    /// clock runs while no request is in flight).
    pub async fn serve_http<I, S>(&self, io: I, service: S)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Service<Request<Incoming>, Response = Response<Body>> + Send,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let timeout = self.pool.limits.request_timeout;
        let counted = Counted {
            inner: service,
            entry: self.entry.clone(),
        };
        tokio::select! {
            served = web::serve(io, counted, timeout) => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "HTTP connection failed");
                }
            }
            () = self.entry.idle_for(timeout) => {
                tracing::debug!(?timeout, "closed: no complete request in time");
            }
        }
    }
}

/// Counts the requests in flight on a connection, for its idle clock and for
/// eviction (idle connections go first).
struct Counted<S> {
    inner: S,
    entry: Arc<Entry>,
}

impl<S> Service<Request<Incoming>> for Counted<S>
where
    S: Service<Request<Incoming>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.entry.busy.send_modify(|n| *n += 1);
        let entry = self.entry.clone();
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await;
            entry.busy.send_modify(|n| *n = n.saturating_sub(1));
            response
        })
    }
}

/// One admitted connection's shared state.
#[derive(Debug)]
struct Entry {
    id: u64,
    /// Cancelled to evict it.
    evict: CancellationToken,
    /// Requests in flight.
    busy: watch::Sender<usize>,
}

impl Entry {
    fn is_idle(&self) -> bool {
        *self.busy.borrow() == 0
    }

    /// Resolves once no request has been in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        let mut busy = self.busy.subscribe();
        loop {
            if *busy.borrow_and_update() == 0 {
                tokio::select! {
                    () = tokio::time::sleep(timeout) => return,
                    changed = busy.changed() => if changed.is_err() { return },
                }
            } else if busy.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Leaves the pending pool when its connection's task ends.
struct Registered {
    pool: Arc<Pool>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.pool.release(self.id);
    }
}

/// Whether a newcomer is in, or when to look again.
enum Room {
    Admitted(Arc<Entry>),
    WaitUntil(Instant),
}

#[derive(Debug)]
struct Pool {
    limits: Limits,
    state: Mutex<State>,
    freed: Notify,
    upgraded: Arc<Semaphore>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// By id, which is arrival order: the first is the oldest.
    pending: BTreeMap<u64, Pending>,
    per_source: HashMap<Source, usize>,
}

#[derive(Debug)]
struct Pending {
    source: Source,
    since: Instant,
    entry: Arc<Entry>,
}

impl Pool {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: Mutex::default(),
            freed: Notify::new(),
            upgraded: Arc::new(Semaphore::new(limits.max_upgraded)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Poisoning only means a panic between two map updates.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection from `source`, evicting one to make room if need
    /// be (see the module's documentation).
    fn admit(&self, source: Source, now: Instant) -> Room {
        let mut state = self.lock();
        loop {
            let crowded = if state.per_source.get(&source).copied().unwrap_or(0)
                >= self.limits.max_pending_per_source.max(1)
            {
                Some(source)
            } else if state.pending.len() >= self.limits.max_pending.max(1) {
                state.largest_source()
            } else {
                None
            };
            let Some(crowded) = crowded else {
                return Room::Admitted(state.insert(source, now));
            };
            match state.victim(crowded, now) {
                Ok(id) => {
                    if let Some(evicted) = state.remove(id) {
                        evicted.entry.evict.cancel();
                    }
                }
                Err(at) => return Room::WaitUntil(at),
            }
        }
    }

    /// Takes a connection out of the pending pool (a no-op if it is out).
    fn release(&self, id: u64) {
        if self.lock().remove(id).is_some() {
            self.freed.notify_one();
        }
    }
}

impl State {
    fn insert(&mut self, source: Source, since: Instant) -> Arc<Entry> {
        let id = self.next_id;
        self.next_id += 1;
        let entry = Arc::new(Entry {
            id,
            evict: CancellationToken::new(),
            busy: watch::Sender::new(0),
        });
        self.pending.insert(
            id,
            Pending {
                source,
                since,
                entry: entry.clone(),
            },
        );
        *self.per_source.entry(source).or_default() += 1;
        entry
    }

    fn remove(&mut self, id: u64) -> Option<Pending> {
        let removed = self.pending.remove(&id)?;
        if let Some(count) = self.per_source.get_mut(&removed.source) {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&removed.source);
            }
        }
        Some(removed)
    }

    fn largest_source(&self) -> Option<Source> {
        self.per_source
            .iter()
            .max_by_key(|(_, count)| **count)
            .map(|(source, _)| *source)
    }

    /// Whom to evict from `source`: its oldest idle connection old enough,
    /// else its oldest busy one old enough; or, when all are younger than
    /// [`MIN_LIFE`], when the oldest will be old enough.
    fn victim(&self, source: Source, now: Instant) -> Result<u64, Instant> {
        let of_source = || self.pending.values().filter(|p| p.source == source);
        let ripe = |p: &&Pending| now >= p.since + MIN_LIFE;
        of_source()
            .filter(ripe)
            .find(|p| p.entry.is_idle())
            .or_else(|| of_source().find(ripe))
            .map(|p| p.entry.id)
            .ok_or_else(|| of_source().map(|p| p.since + MIN_LIFE).min().unwrap_or(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_pending: usize, max_pending_per_source: usize) -> Limits {
        Limits {
            max_pending,
            max_pending_per_source,
            max_upgraded: 1,
            request_timeout: Duration::from_secs(5),
        }
    }

    fn source(last: u8) -> Source {
        Source::of([10, 0, 0, last].into())
    }

    fn admitted(room: Room) -> Arc<Entry> {
        match room {
            Room::Admitted(entry) => entry,
            Room::WaitUntil(at) => panic!("told to wait until {at:?}"),
        }
    }

    #[test]
    fn a_source_at_its_cap_evicts_its_own_oldest_idle_connection() {
        let pool = Pool::new(limits(10, 2));
        let t0 = Instant::now();
        let a1 = admitted(pool.admit(source(1), t0));
        let a2 = admitted(pool.admit(source(1), t0));
        let b = admitted(pool.admit(source(2), t0));
        let later = t0 + MIN_LIFE;
        let a3 = admitted(pool.admit(source(1), later));
        assert!(a1.evict.is_cancelled(), "the oldest of the crowded source");
        assert!(!a2.evict.is_cancelled() && !b.evict.is_cancelled());
        // A busy connection is spared while an idle one is there.
        a2.busy.send_modify(|n| *n += 1);
        admitted(pool.admit(source(1), later + MIN_LIFE));
        assert!(!a2.evict.is_cancelled() && a3.evict.is_cancelled());
    }

    #[test]
    fn a_full_pool_evicts_from_the_source_holding_the_most() {
        let pool = Pool::new(limits(3, 3));
        let t0 = Instant::now();
        let b = admitted(pool.admit(source(2), t0));
        let a: Vec<_> = (0..2)
            .map(|_| admitted(pool.admit(source(1), t0)))
            .collect();
        admitted(pool.admit(source(3), t0 + MIN_LIFE));
        assert!(a[0].evict.is_cancelled(), "the flooder pays");
        assert!(
            !b.evict.is_cancelled(),
            "the quieter source keeps its place"
        );
    }

    #[test]
    fn nobody_is_evicted_before_their_min_life() {
        let pool = Pool::new(limits(1, 1));
        let t0 = Instant::now();
        let first = admitted(pool.admit(source(1), t0));
        match pool.admit(source(1), t0 + MIN_LIFE / 2) {
            Room::WaitUntil(at) => assert_eq!(at, t0 + MIN_LIFE),
            Room::Admitted(_) => panic!("evicted a connection too young"),
        }
        assert!(!first.evict.is_cancelled());
        admitted(pool.admit(source(1), t0 + MIN_LIFE));
        assert!(first.evict.is_cancelled());
    }

    #[test]
    fn an_upgrade_leaves_the_pending_pool_and_takes_an_upgraded_slot() {
        let pool = Arc::new(Pool::new(limits(1, 1)));
        let t0 = Instant::now();
        let conn = |entry| Conn {
            peer: SocketAddr::from(([10, 0, 0, 1], 1)),
            entry,
            pool: pool.clone(),
        };
        let first = conn(admitted(pool.admit(source(1), t0)));
        let slot = first.upgrade().expect("a free upgraded slot");
        // The pending place is free at once, without evicting anybody.
        let second = conn(admitted(pool.admit(source(1), t0)));
        assert!(!first.entry.evict.is_cancelled());
        assert!(second.upgrade().is_err(), "one upgraded slot only");
        drop(slot);
        assert!(second.upgrade().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_clock_runs_only_while_no_request_is_in_flight() {
        let entry = Arc::new(Entry {
            id: 0,
            evict: CancellationToken::new(),
            busy: watch::Sender::new(1),
        });
        let timeout = Duration::from_secs(5);
        let idle = tokio::spawn({
            let entry = entry.clone();
            async move { entry.idle_for(timeout).await }
        });
        tokio::time::sleep(timeout * 3).await;
        assert!(!idle.is_finished(), "a long request is not idleness");
        entry.busy.send_modify(|n| *n -= 1);
        let since = Instant::now();
        idle.await.unwrap();
        assert_eq!(since.elapsed(), timeout);
    }
}
