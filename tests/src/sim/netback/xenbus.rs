//! The toolstack's part (libxl's `xl network-attach`/`network-detach`) and the backend's
//! xenbus driver (Linux `xen-netback/xenbus.c`: probe, `frontend_changed`,
//! `set_backend_state`, `connect`, `xenbus_dev_fatal`).

use std::collections::{BTreeSet, VecDeque};

use xen_front::platform::{DomId, EventChannels, GrantRef, GrantTables, Port};

use super::ring::BackRing;
use super::wire::{RX_ENTRY, TX_ENTRY};
use super::{
    Connection, Faults, FrontendFeatures, SimDomainMaps, SimNetback, SimNetbackConfig, SimNetbackCounters, XenbusState,
    parse_decimal,
};
use crate::sim::xenstored::{Errno, home};
use crate::sim::{Sim, SimDomain, XsTool};

/// Bounce pages each backend allocates: enough for the longest packet it accepts.
const SCRATCH_PAGES: usize = super::wire::FATAL_SKB_SLOTS;

/// Runs `body` in a toolstack transaction, retrying on `EAGAIN` as libxl does.
fn in_transaction(xs: &mut XsTool, body: impl Fn(&XsTool) -> Result<(), Errno>) -> Result<(), Errno> {
    for _ in 0..16 {
        xs.start()?;
        if let Err(e) = body(xs) {
            let _ = xs.abort();
            return Err(e);
        }
        match xs.commit() {
            Err(Errno::EAGAIN) => continue,
            r => return r,
        }
    }
    Err(Errno::EAGAIN)
}

fn mac_string(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

impl SimNetback {
    /// libxl's part of `xl network-attach` with the default [`SimNetbackConfig`]: creates the
    /// frontend directory `/local/domain/<fe>/device/vif/<devid>/` (`backend`, `backend-id`,
    /// `state=1`, `handle`, `mac`, `mtu`, `trusted`; owned by fe, readable by the backend) and
    /// the backend directory `/local/domain/<be>/backend/vif/<fe>/<devid>/` (`frontend`,
    /// `frontend-id`, `online=1`, `state=1`, `script`, `mac`, `handle`, `type=vif`, `mtu`,
    /// `hotplug-status=""`; owned by be, readable by fe) in one dom0 transaction. The backend
    /// does nothing until [`step`](Self::step).
    pub fn attach(sim: &Sim, backend: &SimDomain, frontend: DomId, devid: u32, mac: [u8; 6]) -> Self {
        Self::attach_with(sim, backend, frontend, devid, mac, SimNetbackConfig::default())
    }

    /// [`attach`](Self::attach) with a chosen configuration.
    pub fn attach_with(
        sim: &Sim,
        backend: &SimDomain,
        frontend: DomId,
        devid: u32,
        mac: [u8; 6],
        config: SimNetbackConfig,
    ) -> Self {
        let be = backend.domid();
        let fe_path = format!("{}/device/vif/{devid}", home(frontend));
        let be_path = format!("{}/backend/vif/{frontend}/{devid}", home(be));
        let scratch = (0..SCRATCH_PAGES).map(|_| backend.alloc_page()).collect();
        let mut nb = SimNetback {
            sim: sim.clone(),
            backend: backend.clone(),
            frontend,
            devid,
            mac,
            config,
            xs: sim.xs_tool(be),
            toolstack: sim.xs_tool(0),
            fe_path,
            be_path,
            state: XenbusState::Initialising,
            probed: false,
            last_fe_state: None,
            conn: None,
            disabled: false,
            removed: false,
            dead: false,
            fatal_reason: None,
            scratch,
            rx_queue: VecDeque::new(),
            sent: Vec::new(),
            tx_ids_seen: BTreeSet::new(),
            faults: Faults::default(),
            held: Vec::new(),
            counters: SimNetbackCounters::default(),
        };
        nb.toolstack_add().expect("toolstack: creating the vif directories");
        nb
    }

    fn toolstack_add(&mut self) -> Result<(), Errno> {
        let (fe, be, devid) = (self.frontend, self.backend.domid(), self.devid);
        let (fe_path, be_path, mac) = (self.fe_path.clone(), self.be_path.clone(), mac_string(self.mac));
        in_transaction(&mut self.toolstack, |t| {
            t.mkdir(&fe_path)?;
            t.set_perms(&fe_path, &[&format!("n{fe}"), &format!("r{be}")])?;
            t.mkdir(&be_path)?;
            t.set_perms(&be_path, &[&format!("n{be}"), &format!("r{fe}")])?;
            let fe_keys: [(&str, String); 7] = [
                ("backend", be_path.clone()),
                ("backend-id", be.to_string()),
                ("state", "1".into()),
                ("handle", devid.to_string()),
                ("mac", mac.clone()),
                ("mtu", "1500".into()),
                ("trusted", "1".into()),
            ];
            for (k, v) in fe_keys {
                t.write(&format!("{fe_path}/{k}"), v.as_bytes())?;
            }
            let be_keys: [(&str, String); 10] = [
                ("frontend", fe_path.clone()),
                ("frontend-id", fe.to_string()),
                ("online", "1".into()),
                ("state", "1".into()),
                ("script", "/etc/xen/scripts/vif-route-qubes".into()),
                ("mac", mac.clone()),
                ("handle", devid.to_string()),
                ("type", "vif".into()),
                ("mtu", "1500".into()),
                ("hotplug-status", String::new()),
            ];
            for (k, v) in be_keys {
                t.write(&format!("{be_path}/{k}"), v.as_bytes())?;
            }
            Ok(())
        })
    }

    /// libxl's part of `xl network-detach`: `online=0` and `state=5` into the backend
    /// directory (one dom0 transaction). The backend's own state does not change by this; the
    /// frontend, seeing Closing, is expected to close, and the backend follows it in
    /// [`step`](Self::step): on frontend Closed it goes Closed, unregisters, and both
    /// directories are removed. A frontend that never closes leaves it there (libxl would
    /// time out after 10 s: [`force_remove`](Self::force_remove)).
    pub fn detach(&mut self) {
        let be_path = self.be_path.clone();
        let _ = in_transaction(&mut self.toolstack, |t| {
            t.write(&format!("{be_path}/online"), b"0")?;
            t.write(&format!("{be_path}/state"), b"5")
        });
    }

    /// The toolstack removes both directories at once (`xl network-detach --force`, or
    /// libxl's timeout). The backend notices its directory is gone on its next step and
    /// tears down (unmaps the rings, closes its channel).
    pub fn force_remove(&mut self) {
        let _ = self.toolstack.rm(&self.fe_path);
        let _ = self.toolstack.rm(&self.be_path);
        self.cleanup_empty_parent();
    }

    /// `xl network-detach --force` then `xl network-attach` of the same frontend and MAC to
    /// `backend` with `devid`: this backend tears down (one step), a new one is returned.
    pub fn reattach(mut self, backend: &SimDomain, devid: u32) -> SimNetback {
        self.force_remove();
        self.step();
        let sim = self.sim.clone();
        SimNetback::attach_with(&sim, backend, self.frontend, devid, self.mac, self.config.clone())
    }

    /// The toolstack rewrites the frontend directory's `backend-id` (and `backend`) to name
    /// `backend_id`, without moving anything (a confused or hostile toolstack).
    pub fn rewrite_backend_id(&self, backend_id: DomId) {
        let path = format!("{}/backend/vif/{}/{}", home(backend_id), self.frontend, self.devid);
        let _ = self.toolstack.write(&format!("{}/backend-id", self.fe_path), backend_id.to_string().as_bytes());
        let _ = self.toolstack.write(&format!("{}/backend", self.fe_path), path.as_bytes());
    }

    /// `libxl__xs_path_cleanup`: removes `backend/vif/<fe>` once it has no devices left.
    fn cleanup_empty_parent(&self) {
        let parent = format!("{}/backend/vif/{}", home(self.backend.domid()), self.frontend);
        if self.toolstack.directory(&parent).is_ok_and(|c| c.is_empty()) {
            let _ = self.toolstack.rm(&parent);
        }
    }

    /// One pass of the xenbus driver.
    pub(super) fn xenbus_step(&mut self) {
        if self.probed && self.xs.read(&self.be_path) == Err(Errno::ENOENT) {
            // The toolstack removed the device: xenbus removes it (netback_remove).
            if self.conn.is_some() {
                self.disconnect();
            }
            self.state = XenbusState::Closed;
            self.removed = true;
            return;
        }
        if !self.probed {
            self.probe();
        }
        let raw = self.xs.read(&format!("{}/state", self.fe_path)).ok();
        if self.last_fe_state.as_ref() != Some(&raw) {
            self.last_fe_state = Some(raw.clone());
            let state = raw.as_deref().and_then(parse_decimal).map(XenbusState::from_number);
            self.frontend_changed(state);
        }
    }

    /// `netback_probe`: features in one transaction, then InitWait.
    fn probe(&mut self) {
        self.probed = true;
        let be_path = self.be_path.clone();
        let flag = |b: bool| if b { "1" } else { "0" };
        let mut keys = vec![
            ("feature-sg".to_string(), flag(self.config.feature_sg).to_string()),
            ("feature-rx-copy".to_string(), flag(self.config.feature_rx_copy).to_string()),
            ("feature-rx-flip".to_string(), "0".to_string()),
        ];
        keys.extend(self.config.extra_features.iter().cloned());
        let _ = in_transaction(&mut self.xs, |t| {
            keys.iter().try_for_each(|(k, v)| t.write(&format!("{be_path}/{k}"), v.as_bytes()))
        });
        self.set_backend_state(XenbusState::InitWait);
    }

    /// `frontend_changed`. `None`: unreadable (Unknown); `Some(None)`: a number that is no
    /// state.
    fn frontend_changed(&mut self, state: Option<Option<XenbusState>>) {
        use XenbusState::*;
        match state {
            None | Some(Some(Unknown)) => {
                self.set_backend_state(Closed);
                self.unregister();
            }
            Some(Some(Initialising)) => self.set_backend_state(InitWait),
            Some(Some(Initialised | Reconfiguring | Reconfigured)) => {}
            Some(Some(Connected)) => self.set_backend_state(Connected),
            Some(Some(Closing)) => self.set_backend_state(Closing),
            Some(Some(Closed)) => {
                self.set_backend_state(Closed);
                if !self.online() {
                    self.unregister();
                }
            }
            Some(None) => self.fatal("saw an invalid state at frontend".into()),
            Some(Some(InitWait)) => self.fatal("saw state 2 at frontend".into()),
        }
    }

    /// `xenbus_dev_is_online`: `online` reads as 1.
    fn online(&self) -> bool {
        self.xs.read(&format!("{}/online", self.be_path)).ok().and_then(|v| parse_decimal(&v)) == Some(1)
    }

    /// `set_backend_state`: walks Linux's transition table to `target`.
    fn set_backend_state(&mut self, target: XenbusState) {
        use XenbusState::*;
        for _ in 0..8 {
            if self.state == target {
                return;
            }
            match (self.state, target) {
                (Initialising, InitWait | Connected | Closing) => self.switch_state(InitWait),
                (Initialising, Closed) => self.switch_state(Closed),
                (Closed, InitWait | Connected) => self.switch_state(InitWait),
                (Closed, Closing) => self.switch_state(Closing),
                (InitWait, Connected) => {
                    if self.faults.stay_in_init_wait {
                        return;
                    }
                    match self.connect() {
                        Ok(()) => self.switch_state(Connected),
                        Err(reason) => return self.fatal(reason),
                    }
                }
                (InitWait, Closing | Closed) => self.switch_state(Closing),
                (Connected, InitWait | Closing | Closed) => {
                    self.disconnect();
                    self.switch_state(Closing);
                }
                (Closing, InitWait | Connected | Closed) => self.switch_state(Closed),
                // Linux BUG()s on anything else; the simulator stays where it is.
                _ => return,
            }
        }
    }

    /// `backend_switch_state`: records and writes the state (Connected after the hotplug
    /// script's `hotplug-status=connected`).
    pub(super) fn switch_state(&mut self, state: XenbusState) {
        self.state = state;
        if state == XenbusState::Connected {
            let _ = self.xs.write(&format!("{}/hotplug-status", self.be_path), b"connected");
        }
        let _ = self.xs.write(&format!("{}/state", self.be_path), state.number().to_string().as_bytes());
    }

    /// `xenbus_dev_fatal`: the error node, then Closing.
    fn fatal(&mut self, reason: String) {
        self.counters.fatal_errors += 1;
        let node = format!("{}/error/backend/vif/{}/{}/error", home(self.backend.domid()), self.frontend, self.devid);
        let _ = self.xs.write(&node, reason.as_bytes());
        self.fatal_reason = Some(reason);
        if self.conn.is_some() {
            self.disconnect();
        }
        self.switch_state(XenbusState::Closing);
    }

    /// The device is unregistered; with `online=0` the directories go (the driver domain's
    /// `xl devd` removes the backend one, the toolstack both).
    fn unregister(&mut self) {
        if self.conn.is_some() {
            self.disconnect();
        }
        self.removed = true;
        if !self.online() {
            let _ = self.xs.rm(&self.be_path);
            self.force_remove();
        }
    }

    /// Reads an unsigned frontend key as `xenbus_read_unsigned` does: absent or garbage is
    /// `default`.
    fn read_unsigned(&self, key: &str, default: u32) -> u32 {
        self.xs.read(&format!("{}/{key}", self.fe_path)).ok().and_then(|v| parse_decimal(&v)).unwrap_or(default)
    }

    /// Reads a mandatory frontend key (`xenbus_gather "%u"`).
    fn read_required(&self, key: &str) -> Result<u32, String> {
        let v = self.xs.read(&format!("{}/{key}", self.fe_path)).map_err(|e| format!("reading {key}: {}", e.0))?;
        parse_decimal(&v).ok_or_else(|| format!("reading {key}: not a number"))
    }

    /// `connect`: the frontend's keys, both rings mapped, the channel bound.
    fn connect(&mut self) -> Result<(), String> {
        let queues = self.read_unsigned("multi-queue-num-queues", 1);
        if queues != 1 {
            return Err(format!("guest requested {queues} queues, exceeding the maximum of 1"));
        }
        if self.read_unsigned("request-rx-copy", 0) == 0 {
            return Err("request-rx-copy is not set: copying receive path required".into());
        }
        let on = |key: &str| self.read_unsigned(key, 0) != 0;
        let features = FrontendFeatures {
            rx_notify: on("feature-rx-notify"),
            sg: on("feature-sg"),
            gso_tcpv4: on("feature-gso-tcpv4"),
            gso_tcpv6: on("feature-gso-tcpv6"),
            no_csum_offload: on("feature-no-csum-offload"),
            ipv6_csum_offload: on("feature-ipv6-csum-offload"),
            multicast_control: on("feature-multicast-control"),
        };
        let tx_ref = self.read_required("tx-ring-ref")?;
        let rx_ref = self.read_required("rx-ring-ref")?;
        let evtchn = self.read_required("event-channel")?;
        let fe = self.frontend;
        let be = self.backend.clone();
        let map = |gref: u32, entry: usize, what: &str| {
            let at = be.free_window_gfn().ok_or_else(|| format!("mapping {what}: window full"))?;
            let m = be.map_grant_ref(at, fe, GrantRef(gref), false).map_err(|e| format!("mapping {what}: {}", e.0))?;
            match BackRing::attach(m.page, entry) {
                Ok(ring) => Ok((ring, (at, m.handle))),
                Err(()) => {
                    let _ = be.unmap_grant_ref(at, m.handle);
                    Err(format!("{what}: impossible ring indices"))
                }
            }
        };
        let (tx, tx_map) = map(tx_ref, TX_ENTRY, "tx-ring-ref")?;
        let (rx, rx_map) = match map(rx_ref, RX_ENTRY, "rx-ring-ref") {
            Ok(r) => r,
            Err(e) => {
                let _ = be.unmap_grant_ref(tx_map.0, tx_map.1);
                return Err(e);
            }
        };
        let port = match be.bind_interdomain(fe, Port(evtchn)) {
            Ok(p) => p,
            Err(e) => {
                let _ = be.unmap_grant_ref(tx_map.0, tx_map.1);
                let _ = be.unmap_grant_ref(rx_map.0, rx_map.1);
                return Err(format!("binding event-channel {evtchn}: errno {}", e.0));
            }
        };
        self.conn = Some(Connection { tx, rx, tx_map, rx_map, port, features, tx_more: true, rx_kick: true });
        self.disabled = false;
        self.counters.connects += 1;
        Ok(())
    }

    /// `xenvif_disconnect_data`: unmaps both rings, closes the channel, drops queued RX
    /// frames.
    pub(super) fn disconnect(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let _ = self.backend.unmap_grant_ref(conn.tx_map.0, conn.tx_map.1);
        let _ = self.backend.unmap_grant_ref(conn.rx_map.0, conn.rx_map.1);
        let _ = self.backend.close(conn.port);
        self.counters.rx_dropped += self.rx_queue.len() as u64;
        self.rx_queue.clear();
        self.counters.disconnects += 1;
    }
}
