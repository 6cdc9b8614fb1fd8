//! The agent and its data connections against a dom0 double over small in-memory rings.

use std::vec::Vec;

use super::data::REFUSAL;
use super::wire::{ExecParams, HEADER_LEN, MsgType, Packet, Repr, WireError};
use super::*;
use crate::channel::ByteChannel;
use crate::framed::FrameError;
use crate::testing::Pipe;

fn emit(r: Repr<'_>) -> Vec<u8> {
    let mut b = std::vec![0u8; r.buffer_len()];
    r.emit(&mut b);
    b
}

fn hello(v: u32) -> Vec<u8> {
    emit(Repr::Hello { version: v })
}

fn exec(port: u32, cmdline: &str) -> Vec<u8> {
    emit(Repr::ExecCmdline(ExecParams { connect_domain: 0, connect_port: port, cmdline }))
}

fn terminated(port: u32) -> Vec<u8> {
    emit(Repr::ConnectionTerminated { connect_domain: 0, connect_port: port })
}

/// Splits a byte stream into messages (test side, trusting).
fn messages(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = Packet::new_unchecked(&bytes[at..]).len() as usize;
        out.push(bytes[at..at + HEADER_LEN + len].to_vec());
        at += HEADER_LEN + len;
    }
    out
}

struct Dom0 {
    agent: std::boxed::Box<Agent>,
    vm: Pipe,
    dom0: Pipe,
}

fn poll_ctrl(d: &mut Dom0) -> Result<Vec<AgentEvent>, AgentError> {
    let mut ev = Vec::new();
    for _ in 0..8 {
        if let Some(e) = d.agent.poll_control(&mut d.vm)? {
            ev.push(e);
        }
    }
    Ok(ev)
}

fn connected(peer_version: u32) -> Dom0 {
    let (vm, dom0) = Pipe::pair(1024);
    let mut d = Dom0 { agent: std::boxed::Box::new(Agent::new()), vm, dom0 };
    assert_eq!(d.agent.poll_control(&mut d.vm), Ok(None));
    assert_eq!(d.dom0.read_all(), hello(4), "the agent (server) speaks first");
    d.dom0.write_all(&hello(peer_version));
    assert_eq!(poll_ctrl(&mut d), Ok(std::vec![AgentEvent::Connected { version: peer_version.min(4) }]));
    d
}

/// Runs a request's data connection against dom0's side, which sends HELLO and `stdin`
/// (written as the ring allows); returns the agent's events and everything it sent.
fn run_data(d: &mut Dom0, id: RequestId, ring: usize, stdin: &[u8]) -> (Vec<Result<DataEvent, DataError>>, Vec<u8>) {
    let (mut vm, mut dom0) = Pipe::pair(ring);
    let mut backlog = hello(4);
    backlog.extend_from_slice(stdin);
    let mut events = Vec::new();
    let mut out = Vec::new();
    for _ in 0..200 {
        let n = dom0.write(&backlog);
        backlog.drain(..n);
        match d.agent.poll_data(id, &mut vm) {
            Ok(Some(e)) => events.push(Ok(e)),
            Ok(None) => {}
            Err(e) => {
                events.push(Err(e));
                break;
            }
        }
        out.extend(dom0.read_all());
        if !d.agent.is_running(id) {
            break;
        }
    }
    out.extend(dom0.read_all());
    (events, out)
}

fn open(d: &mut Dom0, port: u32, cmdline: &str) -> RequestId {
    d.dom0.write_all(&exec(port, cmdline));
    match poll_ctrl(d).unwrap()[..] {
        [AgentEvent::OpenData { id, domain: 0, port: p }] if p == port => id,
        ref other => panic!("{other:?}"),
    }
}

#[test]
fn versions_negotiate_to_the_lower_and_old_peers_are_refused() {
    for v in [3, 4, 5] {
        let d = connected(v);
        assert_eq!(d.agent.version(), Some(v.min(4)));
    }
    let (mut vm, mut dom0) = Pipe::pair(1024);
    let mut agent = Agent::new();
    agent.poll_control(&mut vm).unwrap();
    dom0.write_all(&hello(2));
    assert_eq!(agent.poll_control(&mut vm), Err(AgentError::Version(2)));
    assert_eq!(agent.version(), None);
}

#[test]
fn wait_for_session_exits_0_and_releases_the_port() {
    let mut d = connected(4);
    let id = open(&mut d, 513, "user:QUBESRPC qubes.WaitForSession dom0");
    let (events, out) = run_data(&mut d, id, 1024, b"");
    assert_eq!(events, [Ok(DataEvent::Finished { exit_code: 0 })]);
    let mut want = hello(4);
    want.extend(emit(Repr::Stdout(b"")));
    want.extend(emit(Repr::ExitCode(0)));
    assert_eq!(out, want);
    poll_ctrl(&mut d).unwrap();
    assert_eq!(d.dom0.read_all(), terminated(513));
    assert!(!d.agent.is_running(id));
}

#[test]
fn set_date_time_reads_stdin_in_pieces_and_reports_the_clock() {
    let mut d = connected(3);
    d.dom0.write_all(&emit(Repr::JustExec(ExecParams {
        connect_domain: 0,
        connect_port: 600,
        cmdline: "root:QUBESRPC qubes.SetDateTime dom0",
    })));
    let id = match poll_ctrl(&mut d).unwrap()[..] {
        [AgentEvent::OpenData { id, .. }] => id,
        ref o => panic!("{o:?}"),
    };
    let mut stdin = emit(Repr::Stdin(b"2014-09-29T22:5"));
    stdin.extend(emit(Repr::Stdin(b"9:21+0000\n")));
    let (events, out) = run_data(&mut d, id, 1024, &stdin);
    assert_eq!(events, [Ok(DataEvent::SetWallClock(1_412_031_561)), Ok(DataEvent::Finished { exit_code: 0 })]);
    assert_eq!(messages(&out)[1..], [emit(Repr::Stdout(b"")), emit(Repr::ExitCode(0))]);
    // EOF without newline works too; a bad time exits 1.
    let id = open(&mut d, 601, "root:QUBESRPC qubes.SetDateTime dom0");
    let mut stdin = emit(Repr::Stdin(b"2014-09-29T22:59:21Z"));
    stdin.extend(emit(Repr::Stdin(b"")));
    let (events, _) = run_data(&mut d, id, 1024, &stdin);
    assert_eq!(events[0], Ok(DataEvent::SetWallClock(1_412_031_561)));
    let id = open(&mut d, 602, "root:QUBESRPC qubes.SetDateTime dom0");
    let (events, out) = run_data(&mut d, id, 1024, &emit(Repr::Stdin(b"tomorrow\n")));
    assert_eq!(events, [Ok(DataEvent::Finished { exit_code: 1 })]);
    assert_eq!(messages(&out).last().unwrap(), &emit(Repr::ExitCode(1)));
    // A time line longer than any time: refused, even streamed through a small ring.
    let id = open(&mut d, 603, "root:QUBESRPC qubes.SetDateTime dom0");
    let (events, _) = run_data(&mut d, id, 1024, &emit(Repr::Stdin(&[b'9'; 5000])));
    assert_eq!(events, [Ok(DataEvent::Finished { exit_code: 1 })]);
}

#[test]
fn other_services_and_commands_get_stderr_and_exit_1() {
    for cmd in ["user:QUBESRPC qubes.VMShell dom0", "user:echo hi", "garbage", "user:QUBESRPC broken"] {
        let mut d = connected(4);
        let id = open(&mut d, 520, cmd);
        let (events, out) = run_data(&mut d, id, 1024, b"");
        assert_eq!(events, [Ok(DataEvent::Finished { exit_code: 1 })], "{cmd}");
        assert_eq!(
            messages(&out),
            [hello(4), emit(Repr::Stderr(REFUSAL)), emit(Repr::Stdout(b"")), emit(Repr::ExitCode(1))]
        );
    }
}

#[test]
fn a_command_line_longer_than_the_ring_and_the_buffer_is_refused_cleanly() {
    let mut d = connected(4);
    let long = std::format!("user:QUBESRPC qubes.WaitForSession{} dom0", "x".repeat(3000));
    let wire = exec(530, &long);
    let mut sent = 0;
    let mut events = Vec::new();
    for _ in 0..20 {
        sent += d.dom0.write(&wire[sent..]);
        if let Some(e) = d.agent.poll_control(&mut d.vm).unwrap() {
            events.push(e);
        }
    }
    assert_eq!(sent, wire.len());
    let [AgentEvent::OpenData { id, port: 530, .. }] = events[..] else { panic!("{events:?}") };
    let (events, _) = run_data(&mut d, id, 1024, b"");
    assert_eq!(events, [Ok(DataEvent::Finished { exit_code: 1 })]);
    // And the control stream is still in step.
    let id = open(&mut d, 531, "user:QUBESRPC qubes.WaitForSession dom0");
    assert_eq!(run_data(&mut d, id, 1024, b"").0, [Ok(DataEvent::Finished { exit_code: 0 })]);
}

#[test]
fn a_malformed_data_message_drops_only_that_connection() {
    let mut d = connected(4);
    let id = open(&mut d, 540, "root:QUBESRPC qubes.SetDateTime dom0");
    let mut junk = std::vec![0x55, 0x05, 0, 0, 0, 0, 0, 0];
    junk.extend(emit(Repr::Stdin(b"never read")));
    let (events, _) = run_data(&mut d, id, 1024, &junk);
    assert_eq!(events, [Err(DataError::Wire(WireError::UnknownType(0x555)))]);
    poll_ctrl(&mut d).unwrap();
    assert_eq!(d.dom0.read_all(), terminated(540));
    assert_eq!(d.agent.counters.data_errors, 1);
    // Data before HELLO, a bad version, an exit code from dom0, a closed channel.
    for (bytes, err) in
        [(emit(Repr::Stdin(b"x")), DataError::NoHello(MsgType::DataStdin)), (hello(1), DataError::Version(1))]
    {
        let id = open(&mut d, 541, "root:QUBESRPC qubes.SetDateTime dom0");
        let (mut vm, mut dom0) = Pipe::pair(1024);
        dom0.write_all(&bytes);
        let mut got = None;
        for _ in 0..5 {
            if let Err(e) = d.agent.poll_data(id, &mut vm) {
                got = Some(e);
                break;
            }
        }
        assert_eq!(got, Some(err));
    }
    let id = open(&mut d, 542, "root:QUBESRPC qubes.SetDateTime dom0");
    let (events, _) = run_data(&mut d, id, 1024, &emit(Repr::ExitCode(0)));
    assert_eq!(events, [Err(DataError::Unexpected(MsgType::DataExitCode))]);
    let id = open(&mut d, 543, "root:QUBESRPC qubes.SetDateTime dom0");
    let (mut vm, mut dom0) = Pipe::pair(1024);
    d.agent.poll_data(id, &mut vm).unwrap();
    dom0.write_all(&hello(4));
    dom0.close();
    let mut got = None;
    for _ in 0..5 {
        if let Err(e) = d.agent.poll_data(id, &mut vm) {
            got = Some(e);
            break;
        }
    }
    assert_eq!(got, Some(DataError::Closed));
    let huge = [0x90, 0x01, 0, 0, 0x01, 0x00, 0x01, 0x00];
    let id = open(&mut d, 544, "root:QUBESRPC qubes.SetDateTime dom0");
    let (events, _) = run_data(&mut d, id, 1024, &huge);
    assert_eq!(events, [Err(DataError::Frame(FrameError::TooLong { len: 8 + 65537, max: 8 + 65536 }))]);
    // The control channel is untouched by all of this.
    assert_eq!(d.agent.version(), Some(4));
}

#[test]
fn requests_beyond_the_table_are_refused_and_failed_opens_release_the_port() {
    let mut d = connected(4);
    let ids: Vec<RequestId> = (0..agent::MAX_REQUESTS as u32)
        .map(|i| open(&mut d, 550 + i, "u:QUBESRPC qubes.WaitForSession dom0"))
        .collect();
    d.dom0.write_all(&exec(599, "u:QUBESRPC qubes.WaitForSession dom0"));
    assert_eq!(poll_ctrl(&mut d), Ok(std::vec![]));
    assert_eq!(d.dom0.read_all(), terminated(599));
    assert_eq!(d.agent.counters.busy, 1);
    d.agent.data_failed(ids[2]);
    poll_ctrl(&mut d).unwrap();
    assert_eq!(d.dom0.read_all(), terminated(552));
    assert_eq!(open(&mut d, 560, "u:QUBESRPC qubes.WaitForSession dom0"), ids[2]);
}

#[test]
fn hostile_control_messages_reset_the_control_channel() {
    let cases: [(Vec<u8>, AgentError); 6] = [
        (std::vec![0x00, 0x09, 0, 0, 0, 0, 0, 0], AgentError::Wire(WireError::UnknownType(0x900))),
        (emit(Repr::Stdin(b"x")), AgentError::Unexpected(MsgType::DataStdin)),
        (hello(4), AgentError::Unexpected(MsgType::Hello)),
        (std::vec![0x00, 0x03, 0, 0, 3, 0, 0, 0, 4, 0, 0], AgentError::Wire(WireError::BadLength(MsgType::Hello, 3))),
        (
            std::vec![0x90, 0x01, 0, 0, 0xff, 0xff, 0xff, 0x7f],
            AgentError::Frame(FrameError::TooLong { len: 8 + 0x7fff_ffff, max: 8 + 65536 }),
        ),
        (
            std::vec![0x00, 0x02, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, b'x'],
            AgentError::Wire(WireError::BadCmdline),
        ),
    ];
    for (bytes, err) in cases {
        let mut d = connected(4);
        d.dom0.write_all(&bytes);
        assert_eq!(poll_ctrl(&mut d), Err(err));
        assert_eq!(d.agent.version(), None);
        assert_eq!(d.agent.counters.resets, 1);
    }
    // Before HELLO: anything else is refused.
    let (mut vm, mut dom0) = Pipe::pair(1024);
    let mut agent = Agent::new();
    agent.poll_control(&mut vm).unwrap();
    dom0.write_all(&exec(513, "u:QUBESRPC qubes.WaitForSession dom0"));
    assert_eq!(agent.poll_control(&mut vm), Err(AgentError::NoHello(MsgType::ExecCmdline)));
    // Service triggers and refusals (answers to calls we never make) are ignored.
    let mut d = connected(4);
    let mut refused = super::wire::header(MsgType::ServiceRefused, 32).to_vec();
    refused.extend([0u8; 32]);
    d.dom0.write_all(&refused);
    assert_eq!(poll_ctrl(&mut d), Ok(std::vec![]));
    assert_eq!(d.agent.counters.ignored, 1);
    d.dom0.close();
    assert_eq!(poll_ctrl(&mut d), Err(AgentError::Closed));
}

#[test]
fn seeded_garbage_never_panics() {
    let mut x: u64 = 0x1319_8a2e_0370_7344;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..300 {
        let mut d = connected(4);
        let mut junk = Vec::new();
        if round % 3 == 0 {
            junk.extend(exec(513, "u:QUBESRPC qubes.SetDateTime dom0"));
        }
        let n = next() % 3000;
        for _ in 0..n {
            junk.push(next() as u8);
        }
        // Plausible types make the parser go deeper.
        if round % 2 == 0 && junk.len() > 8 {
            junk[0..4].copy_from_slice(&[0x90, 0x01, 0x00, 0x00]);
        }
        let mut sent = 0;
        let mut ids = Vec::new();
        for _ in 0..20 {
            sent += d.dom0.write(&junk[sent..]);
            match d.agent.poll_control(&mut d.vm) {
                Ok(Some(AgentEvent::OpenData { id, .. })) => ids.push(id),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        for id in ids {
            let (mut vm, mut dom0) = Pipe::pair(1024);
            let mut data = hello(4);
            for _ in 0..(next() % 2000) {
                data.push(next() as u8);
            }
            let mut s = 0;
            for _ in 0..20 {
                s += dom0.write(&data[s..]);
                if d.agent.poll_data(id, &mut vm).is_err() {
                    break;
                }
            }
        }
    }
}
