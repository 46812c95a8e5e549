//! Leader election over a `coordination.k8s.io/v1` Lease, the way client-go's
//! `leaderelection` does it, so that several operator replicas can run while
//! only one of them reconciles.
//!
//! Safety rests on timing. The leader gives up once it could not renew for
//! `renew_deadline`; the others take over only `lease_duration` after the last
//! renewal. The gap (5 s by default) must exceed the clock skew between nodes,
//! because expiry is judged from the Lease's own `renewTime` against the local
//! clock. A holder whose clock runs far ahead would write a `renewTime` in the
//! future and block takeover long after dying, so a Lease that stays unchanged
//! for `lease_duration` by our own monotonic clock counts as expired too (that
//! is client-go's rule).

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, timeout};
use tracing::{debug, info, warn};

/// How long a Lease stays valid after its last renewal (client-go's default).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long the leader keeps working without a successful renewal.
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the leader renews and the others try to acquire.
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid leader election settings: {0}")]
    InvalidConfig(&'static str),
    #[error("no leader election identity: POD_NAME is unset and the hostname is unknown")]
    NoIdentity,
    /// The caller should exit so that Kubernetes restarts it as a standby.
    #[error("lost leadership of Lease {lease}: {reason}")]
    LostLeadership { lease: String, reason: String },
}

/// Which Lease to compete for, as whom, and the election's timings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per replica: the pod name (see [`identity`]).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderConfig {
    /// Settings with client-go's default timings (15 s, 10 s, 2 s).
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        LeaderConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
        }
    }

    /// Rejects settings under which two replicas could lead at once: the
    /// leader must give up (renew deadline) before others may take over (lease
    /// duration), and must get more than one renewal attempt before that.
    pub fn validate(&self) -> Result<(), Error> {
        let problem = if self.namespace.is_empty() || self.name.is_empty() {
            "the Lease namespace and name must not be empty"
        } else if self.identity.is_empty() {
            "the identity must not be empty"
        } else if self.retry_period.is_zero() {
            "the retry period must be positive"
        } else if self.renew_deadline <= self.retry_period {
            "the renew deadline must be longer than the retry period"
        } else if self.lease_duration <= self.renew_deadline {
            "the lease duration must be longer than the renew deadline"
        } else if self.lease_duration.as_secs() >= i32::MAX as u64 {
            "the lease duration is too long"
        } else {
            return Ok(());
        };
        Err(Error::InvalidConfig(problem))
    }

    /// `leaseDurationSeconds`, rounded up so that others never wait less than configured.
    fn lease_seconds(&self) -> i32 {
        let whole =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(whole).unwrap_or(i32::MAX)
    }

    fn lease_ref(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// This replica's identity: the pod name (env `POD_NAME`, from the downward
/// API), else the hostname, which in a pod is the pod name too.
pub fn identity() -> Result<String, Error> {
    first_present([
        std::env::var("POD_NAME").ok(),
        std::env::var("HOSTNAME").ok(),
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok(),
        std::fs::read_to_string("/etc/hostname").ok(),
    ])
    .ok_or(Error::NoIdentity)
}

fn first_present(candidates: impl IntoIterator<Item = Option<String>>) -> Option<String> {
    candidates
        .into_iter()
        .flatten()
        .map(|candidate| candidate.trim().to_owned())
        .find(|candidate| !candidate.is_empty())
}

/// What to do about the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists yet: create one naming us.
    Create,
    /// We hold the Lease: bump its `renewTime`.
    Renew,
    /// The Lease is released or expired: claim it and count a transition.
    TakeOver,
    /// Another replica holds a live Lease.
    Wait { holder: String },
}

/// Decides, at `now`, about `lease` (`None`: no Lease exists). `unchanged_for`
/// is how long we have seen this very Lease version (zero on first sight).
/// Our own Lease is renewed even when expired: nobody else claimed it meanwhile.
pub fn decide(
    lease: Option<&LeaseSpec>,
    me: &str,
    now: Timestamp,
    unchanged_for: Duration,
    cfg: &LeaderConfig,
) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == me {
        Decision::Renew
    } else if holder.is_empty() || expired(spec, now, unchanged_for, cfg) {
        Decision::TakeOver
    } else {
        Decision::Wait {
            holder: holder.to_owned(),
        }
    }
}

/// Expired once `renewTime + leaseDurationSeconds` is past, or once the Lease
/// has sat unchanged that long in our sight (a holder with a fast clock, or a
/// Lease without `renewTime`). A missing or non-positive duration means ours.
fn expired(spec: &LeaseSpec, now: Timestamp, unchanged_for: Duration, cfg: &LeaderConfig) -> bool {
    let duration = spec
        .lease_duration_seconds
        .and_then(|seconds| u64::try_from(seconds).ok())
        .filter(|seconds| *seconds > 0)
        .map_or(cfg.lease_duration, Duration::from_secs);
    let by_timestamp = spec
        .renew_time
        .as_ref()
        .and_then(|renewed| renewed.0.checked_add(duration).ok())
        .is_some_and(|expiry| expiry < now);
    by_timestamp || unchanged_for > duration
}

/// A new Lease naming us.
fn new_lease(cfg: &LeaderConfig, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(cfg.name.clone()),
            namespace: Some(cfg.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(cfg.identity.clone()),
            lease_duration_seconds: Some(cfg.lease_seconds()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }),
    }
}

/// `current` renewed by us, or claimed from its previous holder when `taking_over`.
/// Other fields (strategy, preferredHolder) are kept.
fn held_spec(
    current: &LeaseSpec,
    taking_over: bool,
    now: Timestamp,
    cfg: &LeaderConfig,
) -> LeaseSpec {
    let mut spec = current.clone();
    if taking_over || spec.acquire_time.is_none() {
        spec.acquire_time = Some(MicroTime(now));
    }
    if taking_over {
        spec.lease_transitions = Some(current.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    spec.holder_identity = Some(cfg.identity.clone());
    spec.lease_duration_seconds = Some(cfg.lease_seconds());
    spec.renew_time = Some(MicroTime(now));
    spec
}

/// `current` handed back: no holder, so others take it at once (1 s duration
/// for readers that only look at the timestamps, as client-go writes it).
fn released_spec(current: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        ..current.clone()
    }
}

/// The outcome of one read-decide-write round.
enum Attempt {
    Leading,
    HeldBy(String),
    /// Another replica wrote the Lease between our read and our write (409).
    Raced,
}

struct Elector<'a> {
    api: Api<Lease>,
    cfg: &'a LeaderConfig,
    /// The Lease's resourceVersion and when we first saw it: the clock-skew-proof expiry.
    seen: Option<(String, Instant)>,
    /// The Lease as we last wrote it, so that releasing needs no read.
    held: Option<Lease>,
}

impl<'a> Elector<'a> {
    fn new(client: kube::Client, cfg: &'a LeaderConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            seen: None,
            held: None,
        }
    }

    /// Reads the Lease, decides, and writes it if we may hold it. Writes carry
    /// the resourceVersion read, so a concurrent writer makes ours fail (409).
    async fn attempt(&mut self) -> Result<Attempt, kube::Error> {
        let current = self.api.get_opt(&self.cfg.name).await?;
        let unchanged_for = self.unchanged_for(current.as_ref());
        let spec = current
            .as_ref()
            .map(|lease| lease.spec.clone().unwrap_or_default());
        let now = Timestamp::now();
        let params = PostParams::default();
        let decision = decide(
            spec.as_ref(),
            &self.cfg.identity,
            now,
            unchanged_for,
            self.cfg,
        );
        let written = match (decision, current) {
            (Decision::Wait { holder }, _) => return Ok(Attempt::HeldBy(holder)),
            (decision, Some(mut lease)) => {
                let taking_over = decision == Decision::TakeOver;
                lease.spec = Some(held_spec(
                    &spec.unwrap_or_default(),
                    taking_over,
                    now,
                    self.cfg,
                ));
                self.api.replace(&self.cfg.name, &params, &lease).await
            }
            (_, None) => self.api.create(&params, &new_lease(self.cfg, now)).await,
        };
        match written {
            Ok(lease) => {
                self.held = Some(lease);
                Ok(Attempt::Leading)
            }
            // Conflict on replace, AlreadyExists on create: both are 409.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Raced),
            Err(error) => Err(error),
        }
    }

    /// How long the Lease has kept its current resourceVersion in our sight.
    fn unchanged_for(&mut self, lease: Option<&Lease>) -> Duration {
        let version = lease.and_then(|lease| lease.metadata.resource_version.clone());
        match (&self.seen, version) {
            (Some((seen, since)), Some(version)) if *seen == version => since.elapsed(),
            (_, version) => {
                self.seen = version.map(|version| (version, Instant::now()));
                Duration::ZERO
            }
        }
    }

    /// One attempt bounded by `limit`; failures come back as text for the logs.
    async fn attempt_within(&mut self, limit: Duration) -> Result<Attempt, String> {
        match timeout(limit, self.attempt()).await {
            Ok(Ok(attempt)) => Ok(attempt),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {limit:?}")),
        }
    }

    /// Tries every retry period until we hold the Lease. Returns when the
    /// winning round started: the renew deadline counts from there.
    async fn acquire(&mut self) -> Instant {
        let mut waiting_for = None;
        loop {
            let started = Instant::now();
            match self.attempt_within(self.cfg.renew_deadline).await {
                Ok(Attempt::Leading) => return started,
                Ok(Attempt::HeldBy(holder)) if waiting_for.as_ref() != Some(&holder) => {
                    info!(identity = %self.cfg.identity, %holder, "waiting for leadership");
                    waiting_for = Some(holder);
                }
                Ok(Attempt::HeldBy(_)) => {}
                Ok(Attempt::Raced) => {
                    debug!(identity = %self.cfg.identity, "another replica wrote the Lease first; retrying");
                }
                Err(problem) => {
                    warn!(lease = %self.cfg.lease_ref(), %problem, "could not read or claim the leadership Lease; retrying");
                }
            }
            sleep(self.cfg.retry_period).await;
        }
    }

    /// Renews every retry period; returns once leadership is lost: another
    /// replica holds the Lease, or no renewal succeeded for the renew deadline.
    async fn keep_leading(&mut self, mut renewed: Instant) -> Error {
        loop {
            sleep(self.cfg.retry_period).await;
            let started = Instant::now();
            let left = self.cfg.renew_deadline.saturating_sub(renewed.elapsed());
            let problem = match self.attempt_within(left).await {
                Ok(Attempt::Leading) => {
                    renewed = started;
                    continue;
                }
                Ok(Attempt::HeldBy(holder)) => {
                    return self.lost(format!("{holder} holds it now"));
                }
                Ok(Attempt::Raced) => "another replica wrote the Lease first".to_owned(),
                Err(problem) => problem,
            };
            if renewed.elapsed() >= self.cfg.renew_deadline {
                let since = renewed.elapsed();
                return self.lost(format!(
                    "not renewed for {since:?}; last failure: {problem}"
                ));
            }
            warn!(lease = %self.cfg.lease_ref(), %problem, "could not renew the leadership Lease; retrying");
        }
    }

    fn lost(&mut self, reason: String) -> Error {
        self.held = None;
        Error::LostLeadership {
            lease: self.cfg.lease_ref(),
            reason,
        }
    }

    /// Hands the Lease back so that a standby takes over at once rather than
    /// after the lease duration. Best effort: if it fails, the Lease expires.
    async fn release(&mut self) {
        let Some(mut lease) = self.held.take() else {
            return;
        };
        let spec = lease.spec.take().unwrap_or_default();
        lease.spec = Some(released_spec(&spec, Timestamp::now()));
        let params = PostParams::default();
        let put = self.api.replace(&self.cfg.name, &params, &lease);
        let problem = match timeout(self.cfg.renew_deadline, put).await {
            Ok(Ok(_)) => {
                info!(identity = %self.cfg.identity, lease = %self.cfg.lease_ref(), "released leadership");
                return;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => "no answer in time".to_owned(),
        };
        warn!(lease = %self.cfg.lease_ref(), %problem, "could not release the leadership Lease; it expires on its own");
    }
}

/// Sets the leading flag, and clears it however leading ends (cancellation included).
struct LeadingFlag<'a>(&'a watch::Sender<bool>);

impl<'a> LeadingFlag<'a> {
    fn raise(flag: &'a watch::Sender<bool>) -> Self {
        flag.send_replace(true);
        LeadingFlag(flag)
    }
}

impl Drop for LeadingFlag<'_> {
    fn drop(&mut self) {
        self.0.send_replace(false);
    }
}

/// Waits until this replica holds the Lease, then runs `work` while renewing
/// it; `leading` is true exactly meanwhile (for metrics and logs).
///
/// Returns the work's result once it finishes, after releasing the Lease so that
/// a rolling upgrade hands over at once. Returns [`Error::LostLeadership`]
/// (dropping `work`) when the Lease is lost: the caller should then exit, so
/// that Kubernetes restarts it as a standby, as controller-runtime does.
pub async fn run_as_leader<F, T>(
    client: kube::Client,
    config: &LeaderConfig,
    leading: &watch::Sender<bool>,
    work: F,
) -> Result<T, Error>
where
    F: Future<Output = T>,
{
    config.validate()?;
    let mut elector = Elector::new(client, config);
    let renewed = elector.acquire().await;
    info!(identity = %config.identity, lease = %config.lease_ref(), "acquired leadership");
    let flag = LeadingFlag::raise(leading);
    let outcome = tokio::select! {
        biased;
        output = work => Ok(output),
        lost = elector.keep_leading(renewed) => Err(lost),
    };
    drop(flag);
    match outcome {
        Ok(output) => {
            elector.release().await;
            Ok(output)
        }
        Err(lost) => {
            info!(identity = %config.identity, error = %lost, "lost leadership");
            Err(lost)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LeaderConfig {
        LeaderConfig::new("porthole-system", "porthole-operator", "me")
    }

    /// A fixed instant, `offset` seconds from it.
    fn at(offset: i64) -> Timestamp {
        Timestamp::from_second(1_750_000_000 + offset).unwrap()
    }

    fn held_by(holder: &str, renewed: i64, duration: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: duration,
            acquire_time: Some(MicroTime(at(-100))),
            renew_time: Some(MicroTime(at(renewed))),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }
    }

    fn decide_at(spec: &LeaseSpec, unchanged_for: Duration) -> Decision {
        decide(Some(spec), "me", at(0), unchanged_for, &cfg())
    }

    fn wait_for(holder: &str) -> Decision {
        Decision::Wait {
            holder: holder.to_owned(),
        }
    }

    #[test]
    fn missing_lease_is_created() {
        assert_eq!(
            decide(None, "me", at(0), Duration::ZERO, &cfg()),
            Decision::Create
        );
    }

    #[test]
    fn own_lease_is_renewed_even_when_expired() {
        assert_eq!(
            decide_at(&held_by("me", -1, Some(15)), Duration::ZERO),
            Decision::Renew
        );
        assert_eq!(
            decide_at(&held_by("me", -3600, Some(15)), Duration::ZERO),
            Decision::Renew
        );
    }

    #[test]
    fn live_lease_of_another_is_waited_for() {
        assert_eq!(
            decide_at(&held_by("other", -1, Some(15)), Duration::ZERO),
            wait_for("other")
        );
        assert_eq!(
            decide_at(&held_by("other", -14, Some(15)), Duration::ZERO),
            wait_for("other")
        );
    }

    #[test]
    fn expired_lease_of_another_is_taken_over() {
        assert_eq!(
            decide_at(&held_by("other", -16, Some(15)), Duration::ZERO),
            Decision::TakeOver
        );
        assert_eq!(
            decide_at(&held_by("other", -3600, Some(15)), Duration::ZERO),
            Decision::TakeOver
        );
    }

    #[test]
    fn lease_expiring_exactly_now_is_still_held() {
        assert_eq!(
            decide_at(&held_by("other", -15, Some(15)), Duration::ZERO),
            wait_for("other")
        );
    }

    #[test]
    fn released_lease_is_taken_at_once() {
        let mut spec = held_by("other", 0, Some(15));
        spec.holder_identity = None;
        assert_eq!(decide_at(&spec, Duration::ZERO), Decision::TakeOver);
        spec.holder_identity = Some(String::new());
        assert_eq!(decide_at(&spec, Duration::ZERO), Decision::TakeOver);
    }

    #[test]
    fn lease_without_spec_is_free() {
        assert_eq!(
            decide_at(&LeaseSpec::default(), Duration::ZERO),
            Decision::TakeOver
        );
    }

    #[test]
    fn the_leases_own_duration_counts_not_ours() {
        assert_eq!(
            decide_at(&held_by("other", -30, Some(60)), Duration::ZERO),
            wait_for("other")
        );
        assert_eq!(
            decide_at(&held_by("other", -3, Some(2)), Duration::ZERO),
            Decision::TakeOver
        );
    }

    #[test]
    fn missing_or_nonsensical_duration_falls_back_to_ours() {
        for duration in [None, Some(0), Some(-5)] {
            assert_eq!(
                decide_at(&held_by("other", -14, duration), Duration::ZERO),
                wait_for("other")
            );
            assert_eq!(
                decide_at(&held_by("other", -16, duration), Duration::ZERO),
                Decision::TakeOver
            );
        }
    }

    #[test]
    fn renew_time_in_the_future_is_held() {
        // The holder's clock runs ahead of ours.
        assert_eq!(
            decide_at(&held_by("other", 30, Some(15)), Duration::ZERO),
            wait_for("other")
        );
    }

    #[test]
    fn lease_unchanged_for_its_duration_in_our_sight_expires_whatever_its_timestamps() {
        let future = held_by("other", 3600, Some(15));
        assert_eq!(
            decide_at(&future, Duration::from_secs(15)),
            wait_for("other")
        );
        assert_eq!(
            decide_at(&future, Duration::from_secs(16)),
            Decision::TakeOver
        );
    }

    #[test]
    fn missing_renew_time_waits_for_our_own_observation() {
        let mut spec = held_by("other", 0, Some(15));
        spec.renew_time = None;
        assert_eq!(decide_at(&spec, Duration::ZERO), wait_for("other"));
        assert_eq!(
            decide_at(&spec, Duration::from_secs(16)),
            Decision::TakeOver
        );
    }

    #[test]
    fn expiry_beyond_the_representable_range_does_not_panic() {
        let mut spec = held_by("other", 0, Some(i32::MAX));
        spec.renew_time = Some(MicroTime(Timestamp::MAX));
        assert_eq!(decide_at(&spec, Duration::ZERO), wait_for("other"));
    }

    #[test]
    fn new_lease_names_us_with_no_transitions() {
        let spec = new_lease(&cfg(), at(0)).spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(spec.renew_time, Some(MicroTime(at(0))));
        assert_eq!(spec.lease_transitions, Some(0));
    }

    #[test]
    fn taking_over_counts_a_transition_and_restarts_acquire_time() {
        let mut current = held_by("other", -60, Some(30));
        current.strategy = Some("OldestEmulationVersion".to_owned());
        let spec = held_spec(&current, true, at(0), &cfg());
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(spec.renew_time, Some(MicroTime(at(0))));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.strategy, current.strategy);
    }

    #[test]
    fn taking_over_a_lease_without_transitions_counts_the_first() {
        let spec = held_spec(&LeaseSpec::default(), true, at(0), &cfg());
        assert_eq!(spec.lease_transitions, Some(1));
    }

    #[test]
    fn renewing_keeps_acquire_time_and_transitions() {
        let current = held_by("me", -2, Some(15));
        let spec = held_spec(&current, false, at(0), &cfg());
        assert_eq!(spec.acquire_time, current.acquire_time);
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(spec.renew_time, Some(MicroTime(at(0))));
    }

    #[test]
    fn released_lease_has_no_holder_and_is_taken_at_once_by_another() {
        let spec = released_spec(&held_by("me", -1, Some(15)), at(0));
        assert_eq!(spec.holder_identity, None);
        assert_eq!(spec.lease_duration_seconds, Some(1));
        assert_eq!(spec.lease_transitions, Some(3));
        let other = LeaderConfig::new("porthole-system", "porthole-operator", "other");
        assert_eq!(
            decide(Some(&spec), "other", at(0), Duration::ZERO, &other),
            Decision::TakeOver
        );
    }

    #[test]
    fn default_timings_are_valid() {
        cfg().validate().unwrap();
    }

    #[test]
    fn timings_that_allow_two_leaders_are_rejected() {
        let bad = [
            LeaderConfig {
                renew_deadline: Duration::from_secs(15),
                ..cfg()
            },
            LeaderConfig {
                retry_period: Duration::from_secs(10),
                ..cfg()
            },
            LeaderConfig {
                retry_period: Duration::ZERO,
                ..cfg()
            },
            LeaderConfig {
                lease_duration: Duration::from_secs(u64::from(u32::MAX)),
                ..cfg()
            },
            LeaderConfig::new("porthole-system", "porthole-operator", ""),
            LeaderConfig::new("", "porthole-operator", "me"),
        ];
        for config in bad {
            assert!(
                matches!(config.validate(), Err(Error::InvalidConfig(_))),
                "{config:?}"
            );
        }
    }

    #[test]
    fn lease_seconds_round_up() {
        let config = LeaderConfig {
            lease_duration: Duration::from_millis(10_500),
            ..cfg()
        };
        assert_eq!(config.lease_seconds(), 11);
        assert_eq!(cfg().lease_seconds(), 15);
    }

    #[test]
    fn identity_is_the_first_nonblank_candidate() {
        let found = first_present([
            None,
            Some(" \n".to_owned()),
            Some("pod-7\n".to_owned()),
            Some("x".to_owned()),
        ]);
        assert_eq!(found.as_deref(), Some("pod-7"));
        assert_eq!(first_present([None, Some(String::new())]), None);
    }
}
