//! `mailkeep serve-config dovecot`, run as root, writes its files into OUT (issue 18, item 6):
//! whoever can write into OUT must not make it write, chmod or chown anything else, and the
//! password hashes are never readable by others, not even for a moment.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::*;

/// A backup root with users alice and bob, owned by nobody (serve-config refuses a root
/// owned by root), and where OUT goes.
fn backup(env: &Env) -> PathBuf {
    for user in ["alice", "bob"] {
        std::fs::create_dir(env.root().join(user)).unwrap();
    }
    if is_root() {
        for p in [env.root(), env.root().join("alice"), env.root().join("bob")] {
            std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        }
    }
    env.dir.path().join("imap")
}

fn serve_config(env: &Env, out: &Path) -> Output {
    let (root, out) = (env.root(), out.to_path_buf());
    env.run([&"serve-config".into(), &"dovecot".into(), &"--root".into(), &root, &"--out".into(), &out], &[], b"")
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn a_symlink_planted_at_the_old_temp_names_leaves_its_target_untouched_issue_18() {
    let env = Env::new();
    let out = backup(&env);
    std::fs::create_dir(&out).unwrap();
    let victim = env.dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    for tmp in ["passwd.mailkeep-tmp", "dovecot.mailkeep-tmp", "dovecot.conf.mailkeep-tmp"] {
        std::os::unix::fs::symlink(&victim, out.join(tmp)).unwrap();
    }
    // And at the final names: those are replaced, never written through.
    std::os::unix::fs::symlink(&victim, out.join("passwd")).unwrap();
    let got = serve_config(&env, &out);
    assert_exit(&got, 0);
    assert_bytes_eq("victim", b"precious\n", &std::fs::read(&victim).unwrap());
    assert_eq!(mode(&victim), 0o600, "victim's mode");
    assert_eq!(std::fs::metadata(&victim).unwrap().uid(), nix::unistd::geteuid().as_raw(), "victim's owner");
    assert!(std::fs::symlink_metadata(out.join("passwd")).unwrap().is_file(), "passwd is a file of its own");
    let passwd = std::fs::read_to_string(out.join("passwd")).unwrap();
    assert!(passwd.starts_with("alice:{SSHA512}"), "{passwd}");
}

#[test]
fn out_that_is_a_symlink_is_refused_with_one_line_issue_18() {
    let env = Env::new();
    let out = backup(&env);
    let elsewhere = env.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &out).unwrap();
    let got = serve_config(&env, &out);
    assert_exit(&got, 2);
    let err = stderr(&got);
    assert!(err.contains("is a symbolic link"), "expected a line naming the symlink, got: {err}");
    assert_eq!(err.lines().count(), 1, "one line on stderr, got: {err}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "nothing written where the link points");
    assert!(got.stdout.is_empty(), "no password printed: {}", String::from_utf8_lossy(&got.stdout));
}

#[test]
fn a_dangling_symlink_at_out_is_refused_not_created_through_issue_18() {
    let env = Env::new();
    let out = backup(&env);
    let target = env.dir.path().join("made-through-link");
    std::os::unix::fs::symlink(&target, &out).unwrap();
    assert_exit(&serve_config(&env, &out), 2);
    assert!(!target.exists(), "the link's target was created");
}

#[test]
fn missing_out_is_created_with_its_parents() {
    let env = Env::new();
    backup(&env);
    let out = env.dir.path().join("a/b/imap");
    assert_exit(&serve_config(&env, &out), 0);
    assert!(out.join("dovecot.conf").is_file() && out.join("passwd").is_file());
    let names: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "no temp file left: {names:?}");
}

/// The passwd file ends 0640 (group dovecot reads it), and, where strace can watch, is
/// created 0600: never readable by others, not even between create and chmod.
#[test]
fn the_passwd_file_is_never_readable_by_others_issue_18() {
    let env = Env::new();
    let out = backup(&env);
    assert_exit(&serve_config(&env, &out), 0);
    assert_eq!(mode(&out.join("passwd")), 0o640, "passwd's final mode");
    assert_eq!(mode(&out.join("dovecot.conf")), 0o644, "dovecot.conf's final mode");

    let strace_ok = Command::new("strace").arg("-V").output().is_ok_and(|o| o.status.success());
    if !strace_ok {
        eprintln!("no strace: the mode at creation is not checked");
        return;
    }
    let log = env.dir.path().join("strace.log");
    let got = Command::new("strace")
        .args(["-f", "-e", "trace=open,openat,creat,chmod,fchmod,fchmodat", "-o"])
        .arg(&log)
        .arg(BIN)
        .args(["serve-config", "dovecot", "--root"])
        .arg(env.root())
        .arg("--out")
        .arg(&out)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert_exit(&got, 0);
    let trace = std::fs::read_to_string(&log).unwrap();
    let creates: Vec<&str> = trace.lines().filter(|l| l.contains("passwd") && l.contains("O_CREAT")).collect();
    assert!(!creates.is_empty(), "strace saw no creation of the passwd file:\n{trace}");
    for line in creates {
        assert!(line.contains("O_EXCL") && line.contains("O_NOFOLLOW"), "created without O_EXCL|O_NOFOLLOW: {line}");
        let created_mode = line.rsplit(", ").next().unwrap().split(')').next().unwrap();
        let created_mode = u32::from_str_radix(created_mode.trim_start_matches('0'), 8).unwrap_or(0);
        assert_eq!(created_mode & 0o077, 0, "passwd created readable by group or others: {line}");
    }
    assert!(!trace.lines().any(|l| l.contains("chmod(\"")), "a chmod by path:\n{trace}");
}

/// Issue 18 review: the kernel follows a symlink named with a trailing `/` (or `/.`), which
/// O_NOFOLLOW then does not see: `--out LINK/` made root write passwd where LINK pointed.
#[test]
fn out_given_as_a_symlink_with_a_trailing_slash_is_refused_too() {
    let env = Env::new();
    let out = backup(&env);
    let elsewhere = env.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &out).unwrap();
    for spelled in ["/", "/."] {
        let mut with = out.clone().into_os_string();
        with.push(spelled);
        let got = serve_config(&env, Path::new(&with));
        assert_exit(&got, 2);
        assert!(stderr(&got).contains("is a symbolic link"), "{spelled}: {}", stderr(&got));
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "{spelled}: nothing written through the link");
    }
    let got = serve_config(&env, &out.join(".."));
    assert_exit(&got, 2);
}

/// Issue 18 review: an OUT that cannot go into a Dovecot configuration is refused before
/// anything is made, not after making it.
#[test]
fn a_refused_out_leaves_nothing_behind() {
    let env = Env::new();
    backup(&env);
    let out = env.dir.path().join("o\u{1b}x y").join("deep");
    let got = serve_config(&env, &out);
    assert_exit(&got, 2);
    assert!(!env.dir.path().join("o\u{1b}x y").exists(), "OUT's parent was made");
}
