//! The command line dom0 sends with MSG_EXEC_CMDLINE / MSG_JUST_EXEC
//! (`libqrexec/exec.c:parse_qubes_rpc_command`): `user:[nogui:]QUBESRPC service[+arg]
//! source_domain`, or `user:[nogui:]shell command` for plain commands.

/// A parsed command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command<'a> {
    /// The user before the first `:`.
    pub user: &'a str,
    /// Whether `nogui:` was given.
    pub nogui: bool,
    /// What to run.
    pub kind: CommandKind<'a>,
}

/// What a command line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandKind<'a> {
    /// A qrexec service call.
    Rpc {
        /// The service name (`qubes.WaitForSession`).
        service: &'a str,
        /// The argument after `+`, if any (may be empty).
        arg: Option<&'a str>,
        /// The calling domain (`dom0`).
        source: &'a str,
    },
    /// A plain shell command (the firewall runs none).
    Shell(&'a str),
}

/// Why a command line does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineError {
    /// No `user:` prefix.
    NoUser,
    /// `QUBESRPC` without a service name and a source domain separated by single spaces.
    BadRpc,
}

/// Parses a command line.
///
/// # Errors
///
/// See [`CmdlineError`].
pub fn parse(cmdline: &str) -> Result<Command<'_>, CmdlineError> {
    let (user, rest) = cmdline.split_once(':').ok_or(CmdlineError::NoUser)?;
    if user.is_empty() {
        return Err(CmdlineError::NoUser);
    }
    let (nogui, rest) = match rest.strip_prefix("nogui:") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let kind = match rest.strip_prefix("QUBESRPC ") {
        Some(rpc) => {
            let (desc, source) = rpc.split_once(' ').ok_or(CmdlineError::BadRpc)?;
            if desc.is_empty() || source.is_empty() || source.contains(' ') {
                return Err(CmdlineError::BadRpc);
            }
            let (service, arg) = match desc.split_once('+') {
                Some((s, a)) => (s, Some(a)),
                None => (desc, None),
            };
            if service.is_empty() {
                return Err(CmdlineError::BadRpc);
            }
            CommandKind::Rpc { service, arg, source }
        }
        None => CommandKind::Shell(rest),
    };
    Ok(Command { user, nogui, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_and_shell_forms() {
        assert_eq!(
            parse("user:QUBESRPC qubes.WaitForSession dom0"),
            Ok(Command {
                user: "user",
                nogui: false,
                kind: CommandKind::Rpc { service: "qubes.WaitForSession", arg: None, source: "dom0" }
            })
        );
        assert_eq!(
            parse("root:nogui:QUBESRPC qubes.SetDateTime+ none"),
            Ok(Command {
                user: "root",
                nogui: true,
                kind: CommandKind::Rpc { service: "qubes.SetDateTime", arg: Some(""), source: "none" }
            })
        );
        assert_eq!(
            parse("user:ls -l /"),
            Ok(Command { user: "user", nogui: false, kind: CommandKind::Shell("ls -l /") })
        );
    }

    #[test]
    fn malformed_forms() {
        assert_eq!(parse("QUBESRPC qubes.WaitForSession dom0"), Err(CmdlineError::NoUser));
        assert_eq!(parse(":QUBESRPC a dom0"), Err(CmdlineError::NoUser));
        assert_eq!(parse("user:QUBESRPC qubes.WaitForSession"), Err(CmdlineError::BadRpc));
        assert_eq!(parse("user:QUBESRPC  dom0"), Err(CmdlineError::BadRpc));
        assert_eq!(parse("user:QUBESRPC a dom0 extra"), Err(CmdlineError::BadRpc));
        assert_eq!(parse("user:QUBESRPC +arg dom0"), Err(CmdlineError::BadRpc));
        assert_eq!(parse("user:QUBESRPC a "), Err(CmdlineError::BadRpc));
    }
}
