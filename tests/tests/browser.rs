//! The TypeScript client (`clients/typescript`) in a real browser against a real `group-server`: two pages
//! in headless Chromium and a TCP client of the Rust crate share one group and each hears the others'
//! broadcasts. The pages report what they heard in their DOM, which `e2e/browser.mjs` reads and prints.
//! And the page of docs/WEB_CLIENTS.md, exactly as written there, joins a group and broadcasts.
//!
//! Needs Node.js (20 or later), npm and Chromium (`/usr/bin/chromium` from Debian's `chromium` package, or
//! `$CHROMIUM`); `.ci/run` installs them. The test installs the package's development dependencies
//! (`npm ci`) when they are missing and builds it (`npm run build`) before it starts.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use group_core::proto::CreateRequest;
use group_net::client::{Client, Push};
use group_tests::clients::bounded;
use group_tests::{Node, config_file};

const PAGES: [&str; 2] = ["web-1", "web-2"];
const TCP_UID: &str = "tcp-player";

fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/typescript")
}

/// Runs `program args` in the package, failing the test with its output if it fails.
fn run_in_package(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .current_dir(package_dir())
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run {program} (Node.js and npm are needed): {error}")
        });
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Installs the development dependencies if missing and builds dist/, once per test process (the tests
/// here run in parallel and must not run npm over each other).
fn build_package() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(build_package_now);
}

fn build_package_now() {
    let package = package_dir();
    let installed = ["typescript", "playwright-core"]
        .iter()
        .all(|name| package.join("node_modules").join(name).exists());
    if !installed {
        run_in_package("npm", &["ci", "--no-audit", "--no-fund"]);
    }
    run_in_package("npm", &["run", "--silent", "build"]);
}

/// Runs `node SCRIPT ARGS` in the package to its end (at most 120 s); returns its success, stdout and stderr.
fn run_node(script: &str, args: &[&str]) -> (bool, String, String) {
    let mut child = Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(package_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node e2e/browser.mjs");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.success(), out.join().unwrap(), err.join().unwrap())
}

/// The TCP member: says "from tcp-player" whenever someone joins, and collects who it heard.
async fn tcp_member(mut client: Client, group: group_core::GroupId) -> BTreeSet<String> {
    let mut heard = BTreeSet::new();
    while !PAGES.iter().all(|page| heard.contains(*page)) {
        match client
            .next_push()
            .await
            .expect("the TCP member's connection")
        {
            Push::Joined { uid, .. } => {
                assert!(PAGES.contains(&uid.as_str()), "unexpected joiner {uid}");
                let message = Bytes::from(format!("from {TCP_UID}"));
                client.broadcast(group, message, true).await.unwrap();
            }
            Push::Broadcast { entries, .. } => {
                for entry in entries {
                    assert_eq!(entry.message, format!("from {}", entry.uid).as_bytes());
                    heard.insert(entry.uid);
                }
            }
            _ => {}
        }
    }
    heard
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browser_pages_and_a_tcp_client_share_a_group() {
    build_package();
    let config = config_file("browser", r#"{ "group": { "sendInterval": 0 } }"#);
    let node = Node::start(&config, &[]);

    let mut tcp = bounded("connect", Client::connect_tcp(node.addr("tcp")))
        .await
        .unwrap();
    bounded("hello", tcp.hello(TCP_UID, "")).await.unwrap();
    let params = CreateRequest {
        allow_empty: true,
        join: true,
        ttl_s: 60,
        interval_ms: 0,
    };
    let group = bounded("create", tcp.create(params)).await.unwrap();
    let member = tokio::spawn(tcp_member(tcp, group));

    let ws = format!("ws://{}", node.addr("ws"));
    let group_text = group.to_string();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let mut args = vec![ws.as_str(), group_text.as_str()];
        args.extend(PAGES);
        args.extend(["--expect", TCP_UID]);
        run_node("e2e/browser.mjs", &args)
    })
    .await
    .unwrap();
    assert!(ok, "the browser pages failed:\n{stdout}\n{stderr}");

    // One JSON line per page: {"uid":..,"state":"done","log":[..]}; each heard the other page and TCP.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), PAGES.len(), "one line per page:\n{stdout}");
    for (page, line) in PAGES.iter().zip(&lines) {
        assert!(
            line.contains(&format!(r#""uid":"{page}","state":"done""#)),
            "{line}"
        );
        assert!(
            line.contains(&format!("broadcast {TCP_UID}: from {TCP_UID}")),
            "{page} heard the TCP member: {line}"
        );
        for other in PAGES.iter().filter(|other| *other != page) {
            assert!(
                line.contains(&format!("broadcast {other}: from {other}")),
                "{page} heard {other}: {line}"
            );
        }
    }
    let heard = bounded("the TCP member hears both pages", member)
        .await
        .unwrap();
    assert_eq!(heard, PAGES.iter().map(|page| page.to_string()).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_clients_page_runs_as_documented() {
    build_package();
    let config = config_file("doc-example", "{}");
    let node = Node::start(&config, &[]);
    let ws = format!("ws://{}", node.addr("ws"));
    let (ok, stdout, stderr) =
        tokio::task::spawn_blocking(move || run_node("e2e/doc-example.mjs", &[&ws]))
            .await
            .unwrap();
    assert!(
        ok,
        "the example page of docs/WEB_CLIENTS.md failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(r#""in group "#), "{stdout}");
}
