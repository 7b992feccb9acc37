//! Hostile or broken input changes nothing and crashes nothing.

use super::{cluster_options, expect, Scenario};
use crate::harness::HarnessError;
use allex_protocol::frame::{decode_text, MAX_LOCAL_FRAME};
use allex_protocol::LocalReply;
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

/// Refused CLI requests, junk on the lan manager's port and on the master's socket.
pub fn bad_input() -> Scenario {
    Scenario {
        name: "bad-input",
        about: "hostile names, junk bytes and impostor children are refused and change nothing",
        cluster: |o| {
            let mut c = cluster_options(o);
            c.masters = 1;
            c
        },
        run: |r| {
            r.step("hostile need names and bad properties are refused", |r| {
                let lan = r.cluster.lan();
                for (instance, props) in [
                    ("../x", "{}"),
                    ("a\u{7}b", "{}"),
                    (".hidden", "{}"),
                    ("ok", "not json"),
                ] {
                    let out = lan.cli(&[
                        "need",
                        "add",
                        "--module",
                        "testsvc",
                        "--instance",
                        instance,
                        "--propertyhash",
                        props,
                    ])?;
                    expect(!out.status.success(), || {
                        format!("need add {instance:?} {props:?} was accepted")
                    })?;
                }
                let st = r.cluster.lan_status()?;
                expect(st.needs.is_empty(), || {
                    format!("needs changed: {:?}", st.needs)
                })
            })?;
            r.step("junk bytes on the lan manager's port do not hurt it", |r| {
                let addr = r.cluster.lan().addr();
                for junk in [
                    &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                    &[0u8, 159, 146, 150, 255, 0, 1, 2][..],
                    &vec![b'{'; 256 * 1024][..],
                ] {
                    if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                        let _ = s.write_all(junk);
                    }
                }
                r.cluster.lan_status().map(drop)
            })?;
            r.step(
                "junk and impostors on the master's socket are refused",
                |r| {
                    let socket = r.cluster.master(0).socket().to_path_buf();
                    let io = |e: std::io::Error| HarnessError::Io {
                        what: format!("talking to {}", socket.display()),
                        source: e,
                    };
                    let stream = std::os::unix::net::UnixStream::connect(&socket).map_err(io)?;
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .map_err(io)?;
                    let mut reader = BufReader::new(stream.try_clone().map_err(io)?);
                    let mut w = stream;
                    // We are no child of the master: claiming readiness must be refused.
                    for line in [
                        "this is not json",
                        "{\"type\":\"launch_missiles\"}",
                        "{\"type\":\"ready\"}",
                    ] {
                        writeln!(w, "{line}").map_err(io)?;
                        let mut reply = String::new();
                        reader.read_line(&mut reply).map_err(io)?;
                        let decoded: Result<LocalReply, _> =
                            decode_text(reply.trim_end(), MAX_LOCAL_FRAME);
                        expect(matches!(decoded, Ok(LocalReply::Error { .. })), || {
                            format!("{line:?} got {reply:?}")
                        })?;
                    }
                    let st = r.cluster.master(0).status()?;
                    expect(st.children.is_empty(), || {
                        format!("children appeared: {:?}", st.children)
                    })
                },
            )?;
            Ok(())
        },
    }
}
