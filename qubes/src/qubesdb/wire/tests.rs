use super::*;

/// `QDB_CMD_WRITE "/qubes-ip" = "10.137.0.5"`, laid out as `struct qdb_hdr` (72 bytes) + data.
fn write_bytes() -> [u8; 82] {
    let mut b = [0u8; 82];
    b[0] = 1;
    b[1..10].copy_from_slice(b"/qubes-ip");
    b[68..72].copy_from_slice(&[10, 0, 0, 0]);
    b[72..82].copy_from_slice(b"10.137.0.5");
    b
}

#[test]
fn deconstruct() {
    let b = write_bytes();
    let p = Packet::new_checked(&b[..]).unwrap();
    assert_eq!(p.msg_type(), MsgType::Write);
    assert_eq!(&p.path_field()[..9], b"/qubes-ip");
    assert_eq!(p.data_len(), 10);
    assert_eq!(p.data(), b"10.137.0.5");
}

#[test]
fn construct_writes_every_byte() {
    let mut b = [0xa5u8; 82];
    let mut p = Packet::new_unchecked(&mut b[..]);
    p.set_msg_type(MsgType::Write);
    p.set_path(b"/qubes-ip");
    p.clear_padding();
    p.set_data_len(10);
    p.data_mut().copy_from_slice(b"10.137.0.5");
    assert_eq!(b, write_bytes());
}

#[test]
fn parse_and_emit_round_trip() {
    let b = write_bytes();
    let repr = Repr::parse(&Packet::new_checked(&b[..]).unwrap()).unwrap();
    assert_eq!(repr, Repr { msg_type: MsgType::Write, path: "/qubes-ip", data: b"10.137.0.5" });
    assert_eq!(repr.buffer_len(), 82);
    let mut out = [0xa5u8; 82];
    repr.emit(&mut Packet::new_unchecked(&mut out[..]));
    assert_eq!(out, b);
    assert_eq!(repr.header(), b[..72]);
}

#[test]
fn multiread_request_is_72_bytes_of_type_2_and_zeros() {
    let r = Repr { msg_type: MsgType::Multiread, path: "", data: b"" };
    let mut expect = [0u8; 72];
    expect[0] = 2;
    assert_eq!(r.header(), expect);
}

#[test]
fn type_values_match_qubesdb_h() {
    let all = [
        MsgType::Read,
        MsgType::Write,
        MsgType::Multiread,
        MsgType::List,
        MsgType::Rm,
        MsgType::Watch,
        MsgType::Unwatch,
        MsgType::RespOk,
        MsgType::RespErrorNoent,
        MsgType::RespError,
        MsgType::RespRead,
        MsgType::RespMultiread,
        MsgType::RespList,
        MsgType::RespWatch,
    ];
    for (i, t) in all.iter().enumerate() {
        assert_eq!(u8::from(*t), i as u8);
        assert_eq!(MsgType::from(i as u8), *t);
    }
    assert_eq!(MsgType::from(14), MsgType::Unknown(14));
    assert_eq!(u8::from(MsgType::Unknown(0xff)), 0xff);
}

fn msg(t: u8, path: &[u8], data: &[u8]) -> std::vec::Vec<u8> {
    let mut b = std::vec![0u8; 72 + data.len()];
    b[0] = t;
    b[1..1 + path.len()].copy_from_slice(path);
    b[68..72].copy_from_slice(&(data.len() as u32).to_le_bytes());
    b[72..].copy_from_slice(data);
    b
}

fn parse(b: &[u8]) -> Result<Repr<'_>, WireError> {
    Repr::parse(&Packet::new_unchecked(b))
}

#[test]
fn hostile_fields_each_give_their_error() {
    assert_eq!(parse(&[1u8; 71]), Err(WireError::Truncated));
    let mut b = msg(1, b"/a", b"xyz");
    b.pop();
    assert_eq!(parse(&b), Err(WireError::TruncatedData));
    let mut b = msg(1, b"/a", b"");
    b[68..72].copy_from_slice(&3072u32.to_le_bytes());
    assert_eq!(parse(&b), Err(WireError::DataTooLong(3072)));
    b[68..72].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(parse(&b), Err(WireError::DataTooLong(u32::MAX)));
    for t in [0u8, 3, 5, 6, 8, 10, 12, 13, 14, 0xff] {
        assert_eq!(parse(&msg(t, b"/a", b"")), Err(WireError::TypeNotAllowed(t)), "type {t}");
    }
    assert_eq!(parse(&msg(1, &[b'a'; 64], b"")), Err(WireError::PathNotTerminated));
    assert_eq!(parse(&msg(1, b"/a b", b"")), Err(WireError::PathBadChar(2)));
    assert_eq!(parse(&msg(1, b"/a\xff", b"")), Err(WireError::PathBadChar(2)));
    assert_eq!(parse(&msg(1, b"-a", b"")), Err(WireError::PathLeadingDash));
    assert_eq!(parse(&msg(1, b"a", b"")), Err(WireError::PathNotAKey));
    assert_eq!(parse(&msg(1, b"/a/", b"")), Err(WireError::PathNotAKey));
    assert_eq!(parse(&msg(1, b"", b"")), Err(WireError::PathNotAKey));
    assert_eq!(parse(&msg(4, b"a/", b"")), Err(WireError::PathNotAKey));
    assert_eq!(parse(&msg(1, b"/a", b"ab\0c")), Err(WireError::DataHasNul(2)));
    assert_eq!(parse(&msg(4, b"/a", b"x")), Err(WireError::UnexpectedData));
    assert_eq!(parse(&msg(7, b"/a", b"x")), Err(WireError::UnexpectedData));
    assert_eq!(parse(&msg(11, b"", b"x")), Err(WireError::PathNotAKey));
    assert_eq!(parse(&msg(11, b"/a/", b"x")), Err(WireError::PathNotAKey));
}

#[test]
fn valid_edge_cases_parse() {
    // 63-byte path (the longest), a 3071-byte value (the largest).
    let path = [b'/'; 1].iter().chain([b'x'; 62].iter()).copied().collect::<std::vec::Vec<u8>>();
    let data = std::vec![b'v'; 3071];
    let b = msg(1, &path, &data);
    let r = parse(&b).unwrap();
    assert_eq!(r.path.len(), 63);
    assert_eq!(r.data.len(), 3071);
    // Bytes after the NUL in the path field are ignored, as the C daemon does.
    let mut b = msg(4, b"/qubes-firewall/10.137.0.5/", b"");
    b[40] = 0xee;
    assert_eq!(parse(&b).unwrap().path, "/qubes-firewall/10.137.0.5/");
    assert_eq!(parse(&msg(11, b"", b"")).unwrap().msg_type, MsgType::RespMultiread);
    assert_eq!(parse(&msg(1, b"/a-b_c.d:e@f", b"")).unwrap().path, "/a-b_c.d:e@f");
}

#[test]
fn length_function() {
    let b = write_bytes();
    assert_eq!(message_len(b[..72].try_into().unwrap()), Ok(82));
    let mut h = [0u8; 72];
    h[68..72].copy_from_slice(&3071u32.to_le_bytes());
    assert_eq!(message_len(&h), Ok(MAX_MESSAGE_LEN));
    h[68..72].copy_from_slice(&3072u32.to_le_bytes());
    assert_eq!(message_len(&h), Err(WireError::DataTooLong(3072)));
}
