//! Fuzz entry points for the qubes crate's peer-facing parsers and state machines: each
//! takes arbitrary bytes (as dom0 could write them) and must neither panic nor break an
//! invariant (a parsed message re-emits to the same bytes; state machines stay in bounds).

use qubes::channel::ByteChannel;
use qubes::config::Config;
use qubes::qrexec::wire as qx;
use qubes::qrexec::{Agent, AgentEvent};
use qubes::qubesdb::wire as qdb;
use qubes::qubesdb::{Client, Store};
use qubes::testing::Pipe;

/// One QubesDB message: parse, and if valid, emit it again and compare.
pub fn qubesdb_wire(data: &[u8]) {
    let Ok(packet) = qdb::Packet::new_checked(data) else { return };
    let Ok(repr) = qdb::Repr::parse(&packet) else { return };
    assert!(repr.path.len() <= qdb::MAX_PATH_LEN && repr.data.len() <= qdb::MAX_DATA_LEN);
    assert!(!repr.data.contains(&0));
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut qdb::Packet::new_unchecked(&mut out[..]));
    let again = qdb::Repr::parse(&qdb::Packet::new_unchecked(&out[..])).expect("emitted message parses");
    assert_eq!(again, repr);
}

/// A QubesDB stream from dom0 (after our MULTIREAD) through a 1 KiB ring into the client, a
/// small store and the configuration model.
pub fn qubesdb_client(data: &[u8]) {
    let (mut vm, mut dom0) = Pipe::pair(1024);
    let mut client = Box::new(Client::new());
    let mut store: Box<Store<32, 4096>> = Box::new(Store::new());
    let mut config = Box::new(Config::new());
    let mut sent = 0;
    let mut idle = 0;
    while idle < 4 {
        let n = dom0.write(&data[sent..]);
        sent += n;
        let _ = dom0.read_all();
        match client.poll(&mut vm, &mut *store) {
            Ok(Some(event)) => {
                config.on_db_event(&*store, &event);
                while config.next_event().is_some() {}
                idle = 0;
            }
            Ok(None) => idle += usize::from(n == 0),
            Err(_) => {
                assert!(!client.is_synced());
                return;
            }
        }
        assert!(store.len() <= 32 && store.bytes() <= 4096);
    }
}

/// One qrexec message: parse, and if valid, emit it again and compare.
pub fn qrexec_wire(data: &[u8]) {
    let Ok(packet) = qx::Packet::new_checked(data) else { return };
    let Ok(repr) = qx::Repr::parse(&packet) else { return };
    if matches!(repr, qx::Repr::Other(_)) {
        return;
    }
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut out);
    assert_eq!(&out[..], &data[..out.len()]);
}

/// A control stream (first half) and a data stream (second half) from dom0 into the agent,
/// through 1 KiB rings. The agent's HELLO exchange is done first so the bytes reach the
/// request handling.
pub fn qrexec_agent(data: &[u8]) {
    let (ctrl, payload) = data.split_at(data.len() / 2);
    let (mut vm, mut dom0) = Pipe::pair(1024);
    let mut agent = Box::new(Agent::new());
    let _ = agent.poll_control(&mut vm);
    let mut hello = [0u8; 12];
    qx::Repr::Hello { version: 4 }.emit(&mut hello);
    dom0.write(&hello);
    let mut ids = Vec::new();
    let mut sent = 0;
    for _ in 0..64 {
        sent += dom0.write(&ctrl[sent..]);
        let _ = dom0.read_all();
        match agent.poll_control(&mut vm) {
            Ok(Some(AgentEvent::OpenData { id, .. })) => ids.push(id),
            Ok(_) => {}
            Err(_) => {
                assert_eq!(agent.version(), None);
                break;
            }
        }
    }
    for id in ids {
        let (mut dvm, mut ddom0) = Pipe::pair(1024);
        let mut s = 0;
        for _ in 0..64 {
            s += ddom0.write(&payload[s..]);
            let _ = ddom0.read_all();
            if agent.poll_data(id, &mut dvm).is_err() || !agent.is_running(id) {
                break;
            }
        }
    }
}
