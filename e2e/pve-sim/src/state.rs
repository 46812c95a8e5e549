//! The simulator's shared state: configuration, keys, clock, VMs, tasks, what it
//! issued, and the faults tests switched on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::qemu::Vm;
use crate::rfb::InputLog;
use crate::tickets::{Clock, TicketAuthority};
use crate::vncproxy::Tasks;

/// Faults tests can switch on through `POST /_sim/faults`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// vncproxy workers give up waiting for their connection at once, exactly as
    /// a worker whose 10 s (LXC: 20 s) passed before the viewer arrived.
    #[serde(default)]
    pub listener_timeout: bool,
    /// The ticket signing key was rotated and VNC tickets no longer verify.
    #[serde(default)]
    pub reject_vnc_tickets: bool,
}

/// Every credential the simulator handed out, for tests asserting none reached a
/// browser.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Issued {
    pub login_tickets: Vec<String>,
    pub csrf_tokens: Vec<String>,
    pub vnc_tickets: Vec<String>,
    pub vnc_passwords: Vec<String>,
}

/// One VM and what viewers typed into it.
pub struct VmEntry {
    pub vm: Arc<Vm>,
    pub input: InputLog,
}

pub struct Sim {
    pub config: Config,
    pub tickets: TicketAuthority,
    pub clock: Clock,
    pub vms: BTreeMap<u32, VmEntry>,
    pub tasks: Tasks,
    pub ca_pem: String,
    /// Where this simulator's vncproxy workers listen (see
    /// [`vncproxy::console_address`]).
    pub console_address: std::net::Ipv4Addr,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    issued: Mutex<Issued>,
    faults: Mutex<Faults>,
}

impl Sim {
    pub fn new(
        config: Config,
        tickets: TicketAuthority,
        vms: BTreeMap<u32, VmEntry>,
        ca_pem: String,
    ) -> Arc<Sim> {
        Arc::new(Sim {
            config,
            tickets,
            clock: Clock::default(),
            vms,
            tasks: Tasks::default(),
            ca_pem,
            console_address: crate::vncproxy::console_address(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            issued: Mutex::new(Issued::default()),
            faults: Mutex::new(Faults::default()),
        })
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub fn issued(&self) -> MutexGuard<'_, Issued> {
        self.issued.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn faults(&self) -> Faults {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    pub fn login_lifetime(&self) -> i64 {
        self.config.login_ticket_lifetime_secs as i64
    }
}
