use super::*;

/// MSG_HELLO, len 4, version 4 — what the agent sends first.
const HELLO_V4: [u8; 12] = [0x00, 0x03, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00];

fn exec_bytes() -> std::vec::Vec<u8> {
    // MSG_EXEC_CMDLINE {connect_domain 0, connect_port 513} "user:QUBESRPC qubes.WaitForSession dom0\0"
    let cmd = b"user:QUBESRPC qubes.WaitForSession dom0\0";
    let mut b = std::vec![0x00, 0x02, 0x00, 0x00];
    b.extend_from_slice(&((8 + cmd.len()) as u32).to_le_bytes());
    b.extend_from_slice(&[0, 0, 0, 0, 0x01, 0x02, 0, 0]);
    b.extend_from_slice(cmd);
    b
}

fn parse(b: &[u8]) -> Result<Repr<'_>, WireError> {
    Repr::parse(&Packet::new_unchecked(b))
}

#[test]
fn hello_round_trip() {
    assert_eq!(parse(&HELLO_V4), Ok(Repr::Hello { version: 4 }));
    let mut b = [0xa5u8; 12];
    assert_eq!(Repr::Hello { version: 4 }.emit(&mut b), 12);
    assert_eq!(b, HELLO_V4);
}

#[test]
fn exec_cmdline_round_trip() {
    let b = exec_bytes();
    let r = parse(&b).unwrap();
    assert_eq!(
        r,
        Repr::ExecCmdline(ExecParams {
            connect_domain: 0,
            connect_port: 513,
            cmdline: "user:QUBESRPC qubes.WaitForSession dom0"
        })
    );
    assert_eq!(r.buffer_len(), b.len());
    let mut out = std::vec![0xa5u8; b.len()];
    r.emit(&mut out);
    assert_eq!(out, b);
}

#[test]
fn data_exit_and_terminated_bytes() {
    let mut b = [0xa5u8; 16];
    assert_eq!(Repr::ExitCode(1).emit(&mut b), 12);
    assert_eq!(b[..12], [0x93, 0x01, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(Repr::ExitCode(-1).emit(&mut b), 12);
    assert_eq!(b[8..12], [0xff; 4]);
    assert_eq!(parse(&b[..12]), Ok(Repr::ExitCode(-1)));
    assert_eq!(Repr::ConnectionTerminated { connect_domain: 0, connect_port: 514 }.emit(&mut b), 16);
    assert_eq!(b, [0x11, 0x02, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x02, 0, 0]);
    assert_eq!(Repr::Stdout(b"").emit(&mut b), 8);
    assert_eq!(b[..8], [0x91, 0x01, 0, 0, 0, 0, 0, 0]);
    assert_eq!(header(MsgType::DataStderr, 3), [0x92, 0x01, 0, 0, 3, 0, 0, 0]);
    let stdin = [0x90, 0x01, 0, 0, 2, 0, 0, 0, b'h', b'i'];
    assert_eq!(parse(&stdin), Ok(Repr::Stdin(b"hi")));
}

#[test]
fn type_values_match_qrexec_h() {
    let pairs = [
        (0x190, MsgType::DataStdin),
        (0x191, MsgType::DataStdout),
        (0x192, MsgType::DataStderr),
        (0x193, MsgType::DataExitCode),
        (0x200, MsgType::ExecCmdline),
        (0x201, MsgType::JustExec),
        (0x202, MsgType::ServiceConnect),
        (0x203, MsgType::ServiceRefused),
        (0x210, MsgType::TriggerService),
        (0x211, MsgType::ConnectionTerminated),
        (0x212, MsgType::TriggerService3),
        (0x213, MsgType::TriggerService4),
        (0x300, MsgType::Hello),
    ];
    for (v, t) in pairs {
        assert_eq!(MsgType::from(v), t);
        assert_eq!(u32::from(t), v);
    }
    assert_eq!(MsgType::from(0x301), MsgType::Unknown(0x301));
}

#[test]
fn hostile_fields_each_give_their_error() {
    assert_eq!(parse(&HELLO_V4[..7]), Err(WireError::Truncated));
    assert_eq!(parse(&HELLO_V4[..11]), Err(WireError::TruncatedPayload));
    let mut b = HELLO_V4;
    b[4] = 5;
    assert_eq!(parse(&[&b[..], &[0]].concat()), Err(WireError::BadLength(MsgType::Hello, 5)));
    let mut unknown = HELLO_V4;
    unknown[1] = 0x07;
    assert_eq!(parse(&unknown), Err(WireError::UnknownType(0x700)));
    let mut e = exec_bytes();
    *e.last_mut().unwrap() = b'x';
    assert_eq!(parse(&e), Err(WireError::BadCmdline));
    let mut e = exec_bytes();
    e[20] = 0;
    assert_eq!(parse(&e), Err(WireError::BadCmdline));
    let mut e = exec_bytes();
    e[20] = 0xff;
    assert_eq!(parse(&e), Err(WireError::BadCmdline));
    // exec_params with no command line at all.
    let short = [0x00, 0x02, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0];
    assert_eq!(parse(&short), Err(WireError::BadLength(MsgType::ExecCmdline, 8)));
    let term = [0x11, 0x02, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(parse(&term), Err(WireError::BadLength(MsgType::ConnectionTerminated, 4)));
    let exit = [0x93, 0x01, 0, 0, 2, 0, 0, 0, 0, 0];
    assert_eq!(parse(&exit), Err(WireError::BadLength(MsgType::DataExitCode, 2)));
    let huge = [0x90, 0x01, 0, 0, 0xff, 0xff, 0xff, 0xff];
    assert_eq!(parse(&huge), Err(WireError::TruncatedPayload));
    assert_eq!(message_len(&huge), Ok(8 + 0xffff_ffff));
}
