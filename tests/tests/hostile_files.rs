//! Hostile files through the real binaries: every bad `allexmasterconfig.json`
//! and every bad needs file stops the start with `file:line:column: what`,
//! exit non-zero, and the file is left exactly as it was.

use allex_sim::process::run_with_deadline;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

/// A need entry with this instance name, as raw JSON text.
fn named(name: &str) -> String {
    format!(r#"[{{"modulename":"m","instancename":"{name}"}}]"#)
}

/// (what, file text, expected `line:column`, words the message must hold)
fn bad_needs() -> Vec<(&'static str, String, &'static str, &'static str)> {
    vec![
        (
            "invalid JSON",
            r#"[{"modulename":"m","instancename":"a""#.into(),
            "1:37",
            "EOF while parsing",
        ),
        ("not an array", "{}".into(), "1:1", "expected a JSON array"),
        (
            "wrong type",
            r#"[{"modulename":5,"instancename":"a"}]"#.into(),
            "1:16",
            "invalid type: integer `5`, expected a string",
        ),
        (
            "duplicate instance names",
            "[{\"modulename\":\"m\",\"instancename\":\"a\"},\n {\"modulename\":\"m\",\"instancename\":\"a\"}]"
                .into(),
            "2:20",
            "duplicate instancename \"a\" (first defined on line 1)",
        ),
        ("dot-dot name", named("../x"), "1:20", "holds the character '/'"),
        ("slash name", named("/"), "1:20", "holds the character '/'"),
        ("NUL in a name", named("a\\u0000b"), "1:20", "holds the character '\\0'"),
        (
            "control character in a name",
            named("a\\u001bb"),
            "1:20",
            "holds the character '\\u{1b}'",
        ),
        (
            "newline in a name",
            named("a\\nINFO forged"),
            "1:20",
            "holds the character '\\n'",
        ),
        (
            "4 KiB name",
            named(&"n".repeat(4096)),
            "1:20",
            "is 4096 bytes long; at most 128",
        ),
        (
            "empty module name",
            r#"[{"modulename":"","instancename":"a"}]"#.into(),
            "1:3",
            "modulename is empty",
        ),
        (
            "unknown protocol",
            r#"[{"modulename":"m","instancename":"a","protocols":["udp"]}]"#.into(),
            "1:56",
            "unknown variant `udp`",
        ),
        (
            "bad ipaddress",
            r#"[{"modulename":"m","instancename":"a","ipaddress":"10.0.0.0/99"}]"#.into(),
            "1:39",
            "ipaddress",
        ),
    ]
}

fn config(extra: &str, tcp: &str) -> String {
    format!(
        r#"{{"lanmanageraddress":"127.0.0.1","portrangestart":{{"tcp":{tcp},"http":16000,"ws":17000}}{extra}}}"#
    )
}

/// (what, file text, expected `line:column`, words the message must hold)
fn bad_configs() -> Vec<(&'static str, String, &'static str, &'static str)> {
    vec![
        (
            "invalid JSON",
            config("", "15000")[..config("", "15000").len() - 1].to_string(),
            "1:87",
            "EOF while parsing",
        ),
        (
            "wrong type",
            config("", "\"15000\""),
            "1:64",
            "invalid type: string \"15000\", expected u16",
        ),
        ("port 0", config("", "0"), "1:52", "leaves 1..=65535"),
        ("port over 65535", config("", "70000"), "1:62", "70000"),
        (
            "range past 65535",
            config("", "65000"),
            "1:52",
            "leaves 1..=65535",
        ),
        (
            "overlapping ranges",
            config("", "15500"),
            "1:64",
            "overlaps the http port range",
        ),
        (
            "empty module name",
            config(r#","services":{"":{"command":"/bin/true"}}"#, "15000"),
            "1:101",
            "module name is empty",
        ),
        (
            "hostile module name",
            config(r#","services":{"../x":{"command":"/bin/true"}}"#, "15000"),
            "1:101",
            "holds the character '/'",
        ),
        (
            "control character in the name",
            config(r#","name":"a\u0000b""#, "15000"),
            "1:89",
            "holds the character '\\0'",
        ),
        (
            "lan manager port 0",
            config(r#","lanmanagerport":0"#, "15000"),
            "1:89",
            "lanmanagerport must be in 1..=65535",
        ),
        (
            "empty range",
            config(r#","portrangesize":0"#, "15000"),
            "1:89",
            "portrangesize must be at least 1",
        ),
        (
            "unknown key",
            config(r#","bogus":1"#, "15000"),
            "1:95",
            "unknown field `bogus`",
        ),
    ]
}

fn check(binary: &str, file: &Path, text: &str, at: &str, words: &str, cmd: Command, what: &str) {
    let out = run_with_deadline(binary, cmd, DEADLINE).unwrap();
    assert!(
        !out.status.success(),
        "{what}: {binary} accepted it: {}",
        out.stderr
    );
    let prefix = format!("{}:{at}: ", file.display());
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains(&prefix))
        .unwrap_or_else(|| panic!("{what}: no {prefix:?} in stderr:\n{}", out.stderr));
    assert!(line.contains(words), "{what}: {words:?} not in {line:?}");
    assert!(
        !out.stdout.contains("listening on") && !out.stdout.contains("ready socket="),
        "{what}: it started anyway: {}",
        out.stdout
    );
    assert_eq!(
        std::fs::read_to_string(file).unwrap(),
        text,
        "{what}: the file was changed"
    );
}

#[test]
fn every_bad_needs_file_stops_the_lan_manager_naming_file_line_and_column() {
    let bin = allex_sim::binary("allexlanmanager").unwrap();
    for (what, text, at, words) in bad_needs() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join(".allexlanmanager");
        std::fs::create_dir(&store).unwrap();
        let file = store.join("needs");
        std::fs::write(&file, &text).unwrap();
        let mut cmd = Command::new(&bin);
        cmd.args(["run", "--listen", "127.0.0.1:0", "--dir"])
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .env_remove("RUST_BACKTRACE");
        check("allexlanmanager", &file, &text, at, words, cmd, what);
        let left: Vec<_> = std::fs::read_dir(&store)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec!["needs"], "{what}: files written: {left:?}");
    }
}

#[test]
fn every_bad_config_stops_the_master_naming_file_line_and_column() {
    let bin = allex_sim::binary("allexmaster").unwrap();
    for (what, text, at, words) in bad_configs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("allexmasterconfig.json");
        std::fs::write(&file, &text).unwrap();
        let mut cmd = Command::new(&bin);
        cmd.arg("run")
            .arg("--config")
            .arg(&file)
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .env_remove("RUST_BACKTRACE");
        check("allexmaster", &file, &text, at, words, cmd, what);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec!["allexmasterconfig.json"], "{what}: {left:?}");
    }
}
