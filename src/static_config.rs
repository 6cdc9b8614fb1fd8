//! Per-client firewall rules from the command line (the configuration when `ip=` is given and
//! QubesDB is not used).
//!
//! One word per client: `rules=<client-ip>;<policy>[;<rule>…]`, where `<policy>` is `accept`
//! or `drop` and each `<rule>` is a Qubes v4 rule line with `+` for its spaces, e.g.
//!
//! ```text
//! rules=10.137.0.10;drop;action=accept+proto=tcp+dstports=80-80;action=accept+specialtarget=dns
//! ```
//!
//! The rules are numbered in order (`0000`, `0001`, …) and committed to the firewall engine
//! exactly as a QubesDB commit would be, so they go through the same parser and fail closed
//! the same way. A client with no `rules=` word has none: all its forwarded traffic is
//! dropped (`NoRules`) and the log says so.

use core::net::Ipv4Addr;

/// Rules per client on the command line.
pub const MAX_CMDLINE_RULES: usize = 16;
/// Bytes of one rule line.
pub const MAX_CMDLINE_RULE_LEN: usize = 192;

/// A `rules=` value split into client, policy and rule texts (still with `+` for spaces).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RulesWord<'a> {
    /// The client's address.
    pub client: Ipv4Addr,
    /// `accept` or `drop`.
    pub policy: &'a str,
    /// The rules, `;`-separated.
    pub rules: &'a str,
}

/// Parses the value of a `rules=` word (the syntax only; the rules themselves are parsed by
/// the firewall on commit).
pub fn parse_rules_word(value: &str) -> Option<RulesWord<'_>> {
    let (client, rest) = value.split_once(';')?;
    let client = client.parse().ok()?;
    let (policy, rules) = rest.split_once(';').unwrap_or((rest, ""));
    if !matches!(policy, "accept" | "drop") {
        return None;
    }
    if rules.split(';').filter(|r| !r.is_empty()).count() > MAX_CMDLINE_RULES
        || rules.split(';').any(|r| r.len() > MAX_CMDLINE_RULE_LEN)
    {
        return None;
    }
    Some(RulesWord { client, policy, rules })
}

/// The entries of one client's rule set, ready for `Firewall::commit_rules`.
pub struct RuleEntries {
    policy: [u8; 6],
    policy_len: usize,
    keys: [[u8; 4]; MAX_CMDLINE_RULES],
    texts: [[u8; MAX_CMDLINE_RULE_LEN]; MAX_CMDLINE_RULES],
    lens: [usize; MAX_CMDLINE_RULES],
    count: usize,
}

impl RuleEntries {
    /// The rule set the command line gives `client` (the last `rules=` word for it wins), or
    /// `None` if it gives none.
    pub fn from_cmdline(cmdline: &str, client: Ipv4Addr) -> Option<RuleEntries> {
        let word = cmdline
            .split_ascii_whitespace()
            .filter_map(|w| w.strip_prefix("rules="))
            .filter_map(parse_rules_word)
            .rfind(|w| w.client == client)?;
        let mut e = RuleEntries {
            policy: [0; 6],
            policy_len: word.policy.len(),
            keys: [[b'0'; 4]; MAX_CMDLINE_RULES],
            texts: [[0; MAX_CMDLINE_RULE_LEN]; MAX_CMDLINE_RULES],
            lens: [0; MAX_CMDLINE_RULES],
            count: 0,
        };
        e.policy[..word.policy.len()].copy_from_slice(word.policy.as_bytes());
        for rule in word.rules.split(';').filter(|r| !r.is_empty()) {
            let n = e.count;
            // parse_rules_word bounded the count and the lengths.
            let (Some(key), Some(text)) = (e.keys.get_mut(n), e.texts.get_mut(n)) else { break };
            key.copy_from_slice(&[b'0', b'0', b'0' + (n / 10) as u8, b'0' + (n % 10) as u8]);
            for (d, s) in text.iter_mut().zip(rule.bytes()) {
                *d = if s == b'+' { b' ' } else { s };
            }
            e.lens[n] = rule.len();
            e.count += 1;
        }
        Some(e)
    }

    /// Number of rules (besides the policy).
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no rules (only the policy).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// `(key, value)` pairs as QubesDB has them under `/qubes-firewall/<ip>/`.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let policy = core::iter::once((&b"policy"[..], &self.policy[..self.policy_len]));
        policy.chain((0..self.count).map(|i| (&self.keys[i][..], &self.texts[i][..self.lens[i]])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 10);

    #[test]
    fn a_clients_rules_become_numbered_entries_with_spaces() {
        let cmdline = "ip=1.2.3.4/24 rules=10.137.0.11;accept rules=10.137.0.10;drop;action=accept+proto=tcp+dstports=80-80;action=drop+proto=udp";
        let e = RuleEntries::from_cmdline(cmdline, C).unwrap();
        let got: Vec<(&[u8], &[u8])> = e.entries().collect();
        assert_eq!(
            got,
            [
                (&b"policy"[..], &b"drop"[..]),
                (b"0000", b"action=accept proto=tcp dstports=80-80"),
                (b"0001", b"action=drop proto=udp"),
            ]
        );
        assert!(RuleEntries::from_cmdline(cmdline, Ipv4Addr::new(10, 137, 0, 12)).is_none());
        let other = RuleEntries::from_cmdline(cmdline, Ipv4Addr::new(10, 137, 0, 11)).unwrap();
        assert!(other.is_empty());
    }

    #[test]
    fn the_engine_accepts_what_the_command_line_gives() {
        let e = RuleEntries::from_cmdline("rules=10.137.0.10;drop;action=accept+proto=tcp+dstports=80-80", C).unwrap();
        let set = firewall::rules::RuleSet::parse(firewall::rules::Family::V4, e.entries()).unwrap();
        assert_eq!(set.rules().len(), 1);
    }

    #[test]
    fn bad_words_are_refused() {
        for bad in
            ["x;accept", "10.137.0.10", "10.137.0.10;maybe", "10.137.0.10;accept;a;b;c;d;e;f;g;h;i;j;k;l;m;n;o;p;q"]
        {
            assert_eq!(parse_rules_word(bad), None, "{bad}");
        }
        let long = format!("10.137.0.10;accept;{}", "x".repeat(MAX_CMDLINE_RULE_LEN + 1));
        assert_eq!(parse_rules_word(&long), None);
    }
}
