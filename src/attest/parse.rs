//! Pure parsers for the kernel and account files the Unix attestor reads
//! (SPEC §2 "attests workloads by their peer credentials"): `/proc/<pid>/stat`,
//! `/proc/<pid>/status`, `/etc/passwd`, `/etc/group`, the target of
//! `/proc/<pid>/exe` and a pidfd's `/proc/self/fdinfo/<fd>`. No I/O here:
//! every function takes the text already read and returns `None` when the
//! text is not in the documented format.

/// What the attestor needs from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Field 3: the process state (`R`, `S`, `Z`, ...).
    pub(crate) state: char,
    /// Field 22: when the process started, in clock ticks since boot.
    pub(crate) start_time: u64,
}

impl ProcStat {
    /// A zombie (`Z`) or dead (`X`) process has exited: its pid still shows
    /// in /proc but nothing about it can be trusted to stay.
    pub(crate) fn has_exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Parses `/proc/<pid>/stat`.
///
/// The second field is the command name in parentheses, and the process
/// chooses it (`prctl(PR_SET_NAME)`): it may hold spaces and `)`. So the
/// fields after it are found by splitting at the *last* `)`, never by
/// counting spaces from the start.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_ascii_whitespace();
    // `rest` starts at field 3 (state); field 22 is 19 further on.
    let state_field = fields.next()?;
    let mut state_chars = state_field.chars();
    let state = state_chars.next()?;
    if state_chars.next().is_some() {
        return None;
    }
    let start_time = fields.nth(18)?.parse::<u64>().ok()?;
    Some(ProcStat { state, start_time })
}

/// The identity lines of `/proc/<pid>/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatusIds {
    /// `Uid:` fields: real, effective, saved, filesystem.
    pub(crate) uids: [u32; 4],
    /// `Gid:` fields: real, effective, saved, filesystem.
    pub(crate) gids: [u32; 4],
    /// `Groups:`: the supplementary group ids, possibly none.
    pub(crate) groups: Vec<u32>,
}

impl StatusIds {
    /// The effective uid, which is what `SO_PEERCRED` reports.
    pub(crate) fn effective_uid(&self) -> u32 {
        let [_, effective, _, _] = self.uids;
        effective
    }

    /// The effective gid, which is what `SO_PEERCRED` reports.
    pub(crate) fn effective_gid(&self) -> u32 {
        let [_, effective, _, _] = self.gids;
        effective
    }
}

/// Parses the `Uid:`, `Gid:` and `Groups:` lines of `/proc/<pid>/status`.
/// All three must be present exactly once.
pub(crate) fn parse_status(text: &str) -> Option<StatusIds> {
    let mut uids = None;
    let mut gids = None;
    let mut groups = None;
    for line in text.lines() {
        // A prefix test per line, not a split: this runs on every Workload
        // API call and `status` has some fifty lines.
        let (slot, value) = if let Some(v) = line.strip_prefix("Uid:") {
            (&mut uids, v)
        } else if let Some(v) = line.strip_prefix("Gid:") {
            (&mut gids, v)
        } else if let Some(v) = line.strip_prefix("Groups:") {
            (&mut groups, v)
        } else {
            continue;
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(parse_ids(value)?);
    }
    Some(StatusIds {
        uids: four(uids?)?,
        gids: four(gids?)?,
        groups: groups?,
    })
}

fn parse_ids(value: &str) -> Option<Vec<u32>> {
    value.split_ascii_whitespace().map(parse_decimal).collect()
}

fn four(ids: Vec<u32>) -> Option<[u32; 4]> {
    ids.try_into().ok()
}

/// Decimal digits only: `u32::from_str` would also take a leading `+`.
fn parse_decimal(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The name of the first entry with numeric id `id` in a `/etc/passwd` or
/// `/etc/group` text (both are `name:password:id:...`). Comments, NIS
/// compatibility lines (`+`/`-`) and malformed lines are skipped; the first
/// match wins, as it does for the C library.
pub(crate) fn name_for_id(db: &str, id: u32) -> Option<&str> {
    db.lines().find_map(|line| {
        if line.starts_with(['#', '+', '-']) {
            return None;
        }
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let line_id = parse_decimal(fields.next()?)?;
        (line_id == id && !name.is_empty()).then_some(name)
    })
}

/// What the `Pid:` line of a pidfd's `/proc/self/fdinfo/<fd>` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PidfdPid {
    /// The process still holds this pid in our pid namespace.
    Running(i32),
    /// `-1`: the process has exited and been reaped; its pid may already
    /// belong to another process.
    Reaped,
    /// `0`: the process lives in a pid namespace that is not ours or a
    /// descendant of ours, so it has no pid here.
    Invisible,
}

/// Parses the `Pid:` line of a pidfd's fdinfo (kernel `pidfd_show_fdinfo`:
/// the pid in the procfs instance's namespace, `0` when the process is
/// outside it, `-1` once no task is attached, i.e. after the process was
/// reaped). A zombie still shows its pid: its pid cannot be reused until it
/// is reaped. Exactly one `Pid:` line must be present.
pub(crate) fn parse_pidfd_pid(fdinfo: &str) -> Option<PidfdPid> {
    let mut found = None;
    for line in fdinfo.lines() {
        let Some(value) = line.strip_prefix("Pid:") else {
            continue;
        };
        if found.is_some() {
            return None;
        }
        let value = value.trim_matches([' ', '\t']);
        found = Some(match value {
            "-1" => PidfdPid::Reaped,
            "0" => PidfdPid::Invisible,
            _ => PidfdPid::Running(i32::try_from(parse_decimal(value)?).ok()?),
        });
    }
    found
}

/// Suffix the kernel appends to `/proc/<pid>/exe` when the file was unlinked.
const DELETED_SUFFIX: &str = " (deleted)";

/// The value for a `unix:path` selector from the target of
/// `/proc/<pid>/exe`, or `None` when there is no trustworthy path.
///
/// A deleted executable no longer lives at any path; the kernel shows its old
/// path plus ` (deleted)`. Registering that path would match whatever file
/// is put there next, so no path selector is given (the sha256 selector,
/// read through the link, still identifies the binary). A file really named
/// `... (deleted)` therefore gets no path selector either, which only ever
/// narrows what a caller matches.
pub(crate) fn exe_path_value(target: &str) -> Option<&str> {
    if !target.starts_with('/') || target.ends_with(DELETED_SUFFIX) {
        return None;
    }
    Some(target)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use proptest::prelude::*;

    const STAT: &str = "6946 (cat) R 6941 6941 6262 0 -1 4194304 99 0 0 0 0 0 0 0 20 0 1 0 \
                        195380 3133440 384 18446744073709551615 94724644454400 0 0 0 0 0 0 0 0 0 17 1 0 0";

    #[test]
    fn stat_start_time_is_field_22() {
        assert_eq!(
            parse_stat(STAT),
            Some(ProcStat {
                state: 'R',
                start_time: 195380
            })
        );
    }

    #[test]
    fn stat_comm_with_spaces_and_parens() {
        let text = STAT.replace("(cat)", "(a) b ) S 1 2 (x)");
        assert_eq!(parse_stat(&text).unwrap().start_time, 195380);
        assert_eq!(parse_stat(&text).unwrap().state, 'R');
    }

    #[test]
    fn stat_rejects_truncated_and_garbage() {
        assert_eq!(parse_stat("1 (x) R 1 2 3"), None);
        assert_eq!(parse_stat("no parens here"), None);
        assert_eq!(parse_stat(&STAT.replace("195380", "-5")), None);
        assert_eq!(parse_stat(&STAT.replace(" R ", " RS ")), None);
    }

    #[test]
    fn zombie_has_exited() {
        let z = parse_stat(&STAT.replace(" R ", " Z ")).unwrap();
        assert!(z.has_exited());
        assert!(!parse_stat(STAT).unwrap().has_exited());
    }

    const STATUS: &str = "Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\n\
                          Uid:\t1000\t1001\t1002\t1003\nGid:\t100\t101\t102\t103\n\
                          FDSize:\t256\nGroups:\t4 24 27 \nNStgid:\t1\n";

    #[test]
    fn status_ids() {
        let ids = parse_status(STATUS).unwrap();
        assert_eq!(ids.uids, [1000, 1001, 1002, 1003]);
        assert_eq!(ids.gids, [100, 101, 102, 103]);
        assert_eq!(ids.groups, vec![4, 24, 27]);
        assert_eq!((ids.effective_uid(), ids.effective_gid()), (1001, 101));
    }

    #[test]
    fn status_empty_groups() {
        let text = STATUS.replace("Groups:\t4 24 27 ", "Groups:\t");
        assert_eq!(parse_status(&text).unwrap().groups, Vec::<u32>::new());
    }

    #[test]
    fn status_rejects_missing_duplicate_and_malformed() {
        assert_eq!(parse_status(&STATUS.replace("Groups:", "Grps:")), None);
        assert_eq!(parse_status(&format!("{STATUS}Uid:\t0\t0\t0\t0\n")), None);
        assert_eq!(parse_status(&STATUS.replace("\t1003", "")), None);
        assert_eq!(parse_status(&STATUS.replace("1000", "+1000")), None);
        assert_eq!(parse_status(&STATUS.replace(" 24 ", " x ")), None);
    }

    const PASSWD: &str = "# comment\n+nis::0:0:::\nroot:x:0:0:root:/root:/bin/bash\n\
                          broken line\n:x:5:5:::\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n\
                          alias:x:65534:1:::\n";

    #[test]
    fn names_by_id() {
        assert_eq!(name_for_id(PASSWD, 0), Some("root"));
        assert_eq!(name_for_id(PASSWD, 65534), Some("nobody"));
        assert_eq!(name_for_id(PASSWD, 5), None);
        assert_eq!(name_for_id(PASSWD, 1000), None);
        assert_eq!(name_for_id("staff:x:50:alice,bob\n", 50), Some("staff"));
    }

    #[test]
    fn exe_paths() {
        assert_eq!(exe_path_value("/usr/bin/sleep"), Some("/usr/bin/sleep"));
        assert_eq!(exe_path_value("/tmp/x (deleted)"), None);
        assert_eq!(exe_path_value("relative"), None);
        assert_eq!(exe_path_value(""), None);
    }

    #[test]
    fn pidfd_pid_line() {
        let info = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nPid:\t4321\nNSpid:\t4321\n";
        assert_eq!(parse_pidfd_pid(info), Some(PidfdPid::Running(4321)));
        assert_eq!(
            parse_pidfd_pid("Pid:\t-1\nNSpid:\t-1\n"),
            Some(PidfdPid::Reaped)
        );
        assert_eq!(
            parse_pidfd_pid("Pid:\t0\nNSpid:\t0\n"),
            Some(PidfdPid::Invisible)
        );
    }

    #[test]
    fn pidfd_pid_rejects_missing_duplicate_and_malformed() {
        assert_eq!(parse_pidfd_pid("pos:\t0\nflags:\t02\n"), None);
        assert_eq!(parse_pidfd_pid("Pid:\t1\nPid:\t2\n"), None);
        assert_eq!(parse_pidfd_pid("Pid:\t-2\n"), None);
        assert_eq!(parse_pidfd_pid("Pid:\t+5\n"), None);
        assert_eq!(parse_pidfd_pid("Pid:\t"), None);
        assert_eq!(parse_pidfd_pid("Pid:\t4294967295\n"), None);
    }

    proptest! {
        #[test]
        fn stat_never_panics(s in "\\PC{0,300}") {
            let _ = parse_stat(&s);
        }

        #[test]
        fn stat_survives_any_comm(comm in "\\PC{0,40}", start in any::<u64>()) {
            let text = STAT.replace("(cat)", &format!("({comm})")).replace("195380", &start.to_string());
            prop_assert_eq!(parse_stat(&text).map(|s| s.start_time), Some(start));
        }

        #[test]
        fn status_never_panics(s in "(\\PC{0,30}\n){0,10}") {
            let _ = parse_status(&s);
        }

        #[test]
        fn groups_round_trip(groups in proptest::collection::vec(any::<u32>(), 0..20)) {
            let list: Vec<String> = groups.iter().map(u32::to_string).collect();
            let text = format!("Uid:\t1\t1\t1\t1\nGid:\t2\t2\t2\t2\nGroups:\t{}\n", list.join(" "));
            prop_assert_eq!(parse_status(&text).unwrap().groups, groups);
        }

        #[test]
        fn pidfd_pid_never_panics(s in "(\\PC{0,30}\n){0,6}") {
            let _ = parse_pidfd_pid(&s);
        }

        #[test]
        fn name_lookup_never_panics(db in "(\\PC{0,40}\n){0,10}", id in any::<u32>()) {
            let _ = name_for_id(&db, id);
        }

        #[test]
        fn name_lookup_finds_written_entry(name in "[a-z_][a-z0-9_-]{0,30}", id in any::<u32>()) {
            let db = format!("{name}:x:{id}:0:gecos:/home:/bin/sh\n");
            prop_assert_eq!(name_for_id(&db, id), Some(name.as_str()));
        }
    }
}
