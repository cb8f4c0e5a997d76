//! End-to-end: the `kubectl-deployer` plugin binary drives real rollouts of the real operator on
//! the local control plane — set version, get, pause/resume, promote, abort, retry, promote
//! --full, status (and its exit codes), list, -o json/yaml — and its live view `get -w`, both on
//! a real terminal (a pseudo-terminal of the test's own) and piped.

mod harness;
mod support;

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use deployer_operator::api::{AbortReason, Deployer, PauseCause, Phase};
use harness::{apply, deployer, events, patch_spec, secs, setup, wait_phase, wait_status};
use kube::Api;
use serde_json::{Value, json};

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-deployer");

/// What one run of the plugin did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `kubectl-deployer -n <ns> <args>` with the tests' kubeconfig, stdout and stderr piped.
async fn plugin(ns: &str, args: &[&str]) -> Run {
    plugin_with(args.iter().copied().chain(["-n", ns]), |_| {}).await
}

async fn plugin_with<'a>(
    args: impl IntoIterator<Item = &'a str>,
    env: impl FnOnce(&mut tokio::process::Command),
) -> Run {
    let args: Vec<&str> = args.into_iter().collect();
    let mut cmd = tokio::process::Command::new(PLUGIN);
    cmd.args(&args).env("KUBECONFIG", support::kubeconfig_path()).env_remove("NO_COLOR").stdin(Stdio::null());
    env(&mut cmd);
    let start = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("kubectl-deployer {args:?} did not finish within 120 s"))
        .expect("the plugin runs");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: start.elapsed(),
    };
    eprintln!("$ kubectl deployer {}\n{}{}(exit {})", args.join(" "), run.stdout, run.stderr, run.code);
    run
}

/// Runs the plugin and requires exit status 0.
async fn ok(ns: &str, args: &[&str]) -> Run {
    let run = plugin(ns, args).await;
    assert_eq!(run.code, 0, "kubectl deployer {args:?} failed: {run:#?}");
    assert!(!run.stdout.contains('\x1b'), "piped output must be plain: {:?}", run.stdout);
    run
}

/// The annotations of the Deployer.
async fn annotations(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> std::collections::BTreeMap<String, String> {
    let api: Api<Deployer> = Api::namespaced(client.clone(), ns);
    api.get(name).await.expect("the Deployer").metadata.annotations.unwrap_or_default()
}

/// Runs `get app` until its output satisfies `pred` (20 s at most); returns that output.
async fn get_until(ns: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let out = ok(ns, &["get", "app"]).await.stdout;
        if pred(&out) {
            return out;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "`get` never showed {what}:\n{out}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A first deploy of `app` at 1.0.0 (4 replicas) with `steps`, waited until Done.
async fn deployed(client: &kube::Client, ns: &str, steps: &[(i32, i64)]) {
    apply(client, ns, &deployer("app", "1.0.0", 4, steps)).await;
    wait_phase(client, ns, "app", Phase::Done, secs(60)).await;
}

/// Every control through the plugin, each checked in the Deployer's status, and `status`'s three
/// exit codes.
#[tokio::test(flavor = "multi_thread")]
async fn the_plugin_drives_a_rollout_through_every_control() {
    let (client, ns, _op) = setup("e2e-plugin").await;
    deployed(&client, &ns, &[(25, 60), (50, 60), (75, 60)]).await;

    let run = ok(&ns, &["status", "app", "--timeout", "60s"]).await;
    assert!(
        run.stdout.contains("deployer/app: rollout complete: 1.0.0 runs 4 available replicas"),
        "{run:#?}"
    );

    // set version starts the rollout; get shows it.
    let run = ok(&ns, &["set", "version", "app", "2.0.0"]).await;
    assert!(run.stdout.starts_with("deployer/app: version 1.0.0 -> 2.0.0: rollout requested"), "{run:#?}");
    wait_status(&client, &ns, "app", "waiting at step 1", secs(60), |s| {
        s.phase == Some(Phase::Waiting) && s.current_step == Some(1)
    })
    .await;
    // The Deployments' status follows their spec within a moment (pods terminate).
    let get = get_until(&ns, "the replicas of step 1", |g| {
        g.contains("stable   1.0.0     app-1.0.0    3         3")
    })
    .await;
    for expected in [
        "deployer/app   namespace ",
        "Phase:      Waiting\n",
        "Step:       1/4   [#####---------------]  25% on the canary",
        "s left (until ",
        "Plan:       [25%/60s]  50%/60s  75%/60s  100%/0s",
        "canary   2.0.0     app-2.0.0    1         1       1",
        "stable   1.0.0     app-1.0.0    3         3       3",
        "Conditions: Ready=False (RolloutInProgress)   Progressing=True (RolloutInProgress)",
    ] {
        assert!(get.contains(expected), "`get` lacks {expected:?}:\n{get}");
    }
    assert!(
        get.lines().any(|l| l.contains("Normal   RolloutStarted")
            && l.contains("rolling out 2.0.0 over 1.0.0 in 4 steps; step 1/4: 25%")),
        "`get` lacks the RolloutStarted Event:\n{get}"
    );

    // -o json / -o yaml: the Deployer object.
    let json_out: Deployer = serde_json::from_str(&ok(&ns, &["get", "app", "-o", "json"]).await.stdout)
        .expect("get -o json is a Deployer");
    assert_eq!(json_out.spec.deployment.version, "2.0.0");
    assert!(json_out.metadata.managed_fields.is_none(), "managedFields are left out, as kubectl does");
    let yaml_out: Deployer = serde_yaml::from_str(&ok(&ns, &["get", "app", "-o", "yaml"]).await.stdout)
        .expect("get -o yaml is a Deployer");
    assert_eq!(yaml_out.status.and_then(|s| s.phase), Some(Phase::Waiting));

    // status gives up after --timeout with its own exit status.
    let run = plugin(&ns, &["status", "app", "--timeout", "2s"]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.took >= Duration::from_secs(2) && run.took < Duration::from_secs(20), "{run:#?}");
    assert!(run.stdout.contains("Waiting    step 1/4    25%  canary 2.0.0 1/1 available"), "{run:#?}");
    assert!(run.stdout.contains("deployer/app: timed out after 2s (phase Waiting)"), "{run:#?}");

    // pause → Paused, resume → Waiting again (the annotation set, then removed).
    let run = ok(&ns, &["pause", "app"]).await;
    assert_eq!(
        run.stdout,
        "deployer/app: pause requested at step 1/4 (Waiting) (deploy.example.com/paused=true)\n"
    );
    let paused = wait_phase(&client, &ns, "app", Phase::Paused, secs(30)).await;
    assert_eq!(paused.paused_by, Some(PauseCause::Annotation));
    assert_eq!(
        annotations(&client, &ns, "app").await.get("deploy.example.com/paused").map(String::as_str),
        Some("true")
    );
    let get = ok(&ns, &["get", "app"]).await.stdout;
    assert!(get.contains("Phase:      Paused (by the paused annotation)"), "{get}");
    assert!(get.contains("Controls:   paused (annotation set)"), "{get}");
    ok(&ns, &["resume", "app"]).await;
    wait_phase(&client, &ns, "app", Phase::Waiting, secs(30)).await;
    assert!(!annotations(&client, &ns, "app").await.contains_key("deploy.example.com/paused"));

    // promote → step 2.
    let run = ok(&ns, &["promote", "app"]).await;
    assert_eq!(run.stdout, "deployer/app: promote requested at step 1/4 (Waiting)\n");
    wait_status(&client, &ns, "app", "waiting at step 2", secs(30), |s| {
        s.phase == Some(Phase::Waiting) && s.current_step == Some(2)
    })
    .await;

    // abort → Aborted; status fails.
    let run = ok(&ns, &["abort", "app"]).await;
    assert!(run.stdout.starts_with("deployer/app: abort requested at step 2/4"), "{run:#?}");
    let aborted = wait_phase(&client, &ns, "app", Phase::Aborted, secs(30)).await;
    assert_eq!(aborted.abort_reason, Some(AbortReason::AbortRequested));
    let run = plugin(&ns, &["status", "app", "--timeout", "30s"]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stdout.contains("deployer/app: rollout failed: rollout aborted (AbortRequested)"),
        "{run:#?}"
    );
    assert!(ok(&ns, &["get", "app"]).await.stdout.contains("Phase:      Aborted (AbortRequested)"));

    // retry → step 1 again; promote --full → Done; status succeeds.
    let run = ok(&ns, &["retry", "app"]).await;
    assert_eq!(run.stdout, "deployer/app: retry requested: 2.0.0 starts again from step 1\n");
    wait_status(&client, &ns, "app", "retried to step 1", secs(30), |s| {
        s.phase == Some(Phase::Waiting) && s.current_step == Some(1)
    })
    .await;
    ok(&ns, &["promote", "app", "--full"]).await;
    let run = ok(&ns, &["status", "app", "--timeout", "60s"]).await;
    assert!(
        run.stdout.contains("deployer/app: rollout complete: 2.0.0 runs 4 available replicas"),
        "{run:#?}"
    );
    let done = harness::status(&client, &ns, "app").await.expect("status");
    assert_eq!((done.phase, done.stable_version.as_deref()), (Some(Phase::Done), Some("2.0.0")));
    let reasons: Vec<String> = events(&client, &ns, "app").await.into_iter().map(|e| e.1).collect();
    for reason in
        ["Paused", "Resumed", "PromoteRequested", "AbortRequested", "RetryRequested", "PromoteFullRequested"]
    {
        assert!(reasons.iter().any(|r| r == reason), "no {reason} Event: {reasons:?}");
    }

    // A control on a finished rollout is refused by the operator, and the plugin says so.
    let run = ok(&ns, &["abort", "app"]).await;
    assert!(run.stdout.contains("no rollout is in progress (Done): the operator will ignore it"), "{run:#?}");

    // list, list -A, list -o json.
    let list = ok(&ns, &["list"]).await.stdout;
    let mut lines = list.lines();
    assert_eq!(
        lines.next().map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["NAME", "PHASE", "STEP", "WEIGHT", "STABLE", "CANARY", "AGE"])
    );
    let row: Vec<&str> = lines.next().expect("a row").split_whitespace().collect();
    assert_eq!(row[..4], ["app", "Done", "4/4", "2.0.0"], "{list}");
    let all = ok(&ns, &["list", "-A"]).await.stdout;
    assert!(all.lines().any(|l| l.starts_with(&ns) && l.contains(" app ")), "{all}");
    let listed: Value = serde_json::from_str(&ok(&ns, &["list", "-o", "json"]).await.stdout).expect("JSON");
    assert_eq!(listed["kind"], "List");
    assert_eq!(listed["items"][0]["metadata"]["name"], "app");
    assert_eq!(listed["items"][0]["status"]["phase"], "Done");

    // set version back and forth through --kubeconfig (no KUBECONFIG) works the same.
    let kubeconfig = support::kubeconfig_path();
    let run =
        plugin_with(["get", "app", "-n", &ns, "--kubeconfig", kubeconfig.to_str().expect("path")], |c| {
            c.env_remove("KUBECONFIG").env("HOME", "/nonexistent");
        })
        .await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.contains("Phase:      Done"), "{run:#?}");

    // Refusals: no such Deployer, no such context, a bad command line.
    for control in [&["promote", "nope"][..], &["pause", "nope"], &["get", "nope"], &["status", "nope"]] {
        let run = plugin(&ns, control).await;
        assert_eq!(run.code, 1, "{run:#?}");
        assert_eq!(run.stderr, format!("error: deployer \"nope\" not found in namespace \"{ns}\"\n"));
    }
    let run = plugin(&ns, &["get", "app", "--context", "no-such-context"]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("no-such-context"), "{run:#?}");
    let run = plugin(&ns, &["status", "app", "--timeout", "soon"]).await;
    assert_eq!(run.code, 64, "{run:#?}");
    support::delete_namespace(&client, &ns).await;
}

/// `set version` to a version the API server refuses prints the server's message.
#[tokio::test(flavor = "multi_thread")]
async fn the_plugin_reports_what_the_api_server_refuses() {
    let (client, ns, _op) = setup("e2e-plugin-bad").await;
    deployed(&client, &ns, &[(50, 0)]).await;
    let run = plugin(&ns, &["set", "version", "app", "Not_A_Version"]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.starts_with("error: ") && run.stderr.contains("deployment.version"), "{run:#?}");
    support::delete_namespace(&client, &ns).await;
}

/// A terminal of the test's own: a pseudo-terminal of 120x50 (openpty) with `bash -c command` as the
/// session leader on it, and a VT100 emulator (the `vt100` crate) that keeps the screen the
/// command draws, as a terminal window would show it. No tmux or other program is needed. The
/// command's process group is killed when dropped.
struct Terminal {
    master: std::fs::File,
    child: std::process::Child,
    screen: std::sync::Arc<std::sync::Mutex<vt100::Parser>>,
}

impl Terminal {
    const ROWS: u16 = 50;
    const COLS: u16 = 120;

    fn start(command: &str) -> Terminal {
        use std::os::{
            fd::{FromRawFd, OwnedFd},
            unix::process::CommandExt,
        };

        let (mut master, mut slave) = (-1, -1);
        let size = libc::winsize { ws_row: Self::ROWS, ws_col: Self::COLS, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: openpty writes two new file descriptors, which are owned from here on.
        let rc =
            unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened by openpty and nothing else owns them.
        let (master, slave) = unsafe { (std::fs::File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup the terminal"));
        let mut sh = std::process::Command::new("bash");
        sh.args(["-c", command]).stdin(stdio(&slave)).stdout(stdio(&slave)).stderr(stdio(&slave));
        // SAFETY: only async-signal-safe calls between fork and exec: a new session whose
        // controlling terminal is the pseudo-terminal (stdin), as a terminal emulator does, so
        // that Ctrl-C typed on it interrupts the command.
        unsafe {
            sh.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = sh.spawn().expect("bash starts on the terminal");
        drop(slave);

        let (rows, cols) = (Self::ROWS.try_into().expect("rows"), Self::COLS.try_into().expect("cols"));
        let screen = std::sync::Arc::new(std::sync::Mutex::new(vt100::Parser::new(rows, cols, 0)));
        let mut reader = master.try_clone().expect("dup the terminal");
        let parser = screen.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 8192];
            // Ends with EIO once the command and everything it started have closed the terminal.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                parser.lock().expect("lock").process(&buf[..n]);
            }
        });
        Terminal { master, child, screen }
    }

    /// The screen as text, one line per row.
    fn capture(&self) -> String {
        self.screen.lock().expect("lock").screen().contents()
    }

    /// Whether any character on the screen has a colour.
    fn has_colours(&self) -> bool {
        let parser = self.screen.lock().expect("lock");
        let screen = parser.screen();
        (0..Self::ROWS).any(|row| {
            (0..Self::COLS).any(|col| {
                screen.cell(row, col).is_some_and(|c| {
                    c.fgcolor() != vt100::Color::Default || c.bgcolor() != vt100::Color::Default
                })
            })
        })
    }

    /// Types `bytes` on the terminal's keyboard (e.g. `b"\x03"`: Ctrl-C).
    fn type_keys(&self, bytes: &[u8]) {
        use std::io::Write;
        (&self.master).write_all(bytes).expect("type on the terminal");
    }

    /// Waits until the screen satisfies `pred`; returns it.
    async fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.capture();
            if pred(&screen) {
                return screen;
            }
            assert!(start.elapsed() < timeout, "timed out waiting for the screen to show {what}:\n{screen}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        // The shell leads its own session and process group: kill all of it.
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: a plain kill(2) of the process group this test started.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// The line of the screen that starts with `key`.
fn line<'a>(screen: &'a str, key: &str) -> &'a str {
    screen.lines().find(|l| l.starts_with(key)).unwrap_or("")
}

/// `get -w` on a real terminal: the frame is drawn in place, in colour, and redrawn as the
/// rollout moves and as the wait counts down; Ctrl-C ends it.
#[tokio::test(flavor = "multi_thread")]
async fn get_watch_redraws_the_live_view_on_a_terminal() {
    let (client, ns, _op) = setup("e2e-plugin-tty").await;
    deployed(&client, &ns, &[(25, 8), (50, 5), (75, 5)]).await;
    patch_spec(&client, &ns, "app", json!({"deployment": {"version": "2.0.0"}})).await;
    let command = format!(
        "env -u NO_COLOR TERM=xterm-256color KUBECONFIG={} {} get app -n {ns} -w; echo EXITED $?; sleep 600",
        shell_quote(&support::kubeconfig_path()),
        shell_quote(Path::new(PLUGIN)),
    );
    let term = Terminal::start(&command);

    let first = term
        .wait_for("step 1/4 waiting", secs(60), |s| {
            line(s, "Step:").contains("1/4") && line(s, "Phase:").contains("Waiting")
        })
        .await;
    assert!(first.contains("canary   2.0.0     app-2.0.0"), "{first}");
    assert!(first.contains("stable   1.0.0     app-1.0.0"), "{first}");
    assert!(first.contains("░"), "the bar uses block glyphs on a terminal:\n{first}");
    assert!(first.contains("Ctrl-C to quit"), "{first}");
    assert_eq!(first.matches("Phase:").count(), 1, "redrawn in place, not scrolled:\n{first}");
    assert!(term.has_colours(), "colours on a terminal");

    // The countdown moves within the step …
    let wait1 = line(&first, "Wait:").to_string();
    let counted = term
        .wait_for("the countdown to move", secs(10), |s| {
            let w = line(s, "Wait:");
            line(s, "Step:").contains("1/4") && w.contains("left") && w != wait1
        })
        .await;
    assert_ne!(line(&counted, "Wait:"), wait1);
    // … and the step changes without a key pressed.
    let second = term.wait_for("step 2/4", secs(60), |s| line(s, "Step:").contains("2/4")).await;
    assert!(line(&second, "Plan:").contains("[50%/5s]"), "{second}");
    assert!(second.contains("canary   2.0.0     app-2.0.0    2"), "{second}");
    assert_eq!(second.matches("Phase:").count(), 1, "{second}");

    term.type_keys(b"\x03");
    term.wait_for("the plugin to exit on Ctrl-C", secs(10), |s| s.contains("EXITED 0")).await;
    support::delete_namespace(&client, &ns).await;
}

/// `get -w` piped: one frame, then a new one only when the content changes (not when only the
/// countdown moves); Ctrl-C (SIGINT) ends it with status 0; `--until-done` ends it when Done.
#[tokio::test(flavor = "multi_thread")]
async fn get_watch_piped_prints_a_frame_per_change() {
    use tokio::io::AsyncReadExt;

    let (client, ns, _op) = setup("e2e-plugin-pipe").await;
    deployed(&client, &ns, &[(25, 60), (50, 60)]).await;
    patch_spec(&client, &ns, "app", json!({"deployment": {"version": "2.0.0"}})).await;
    wait_status(&client, &ns, "app", "waiting at step 1", secs(60), |s| {
        s.phase == Some(Phase::Waiting) && s.current_step == Some(1)
    })
    .await;
    // Let the pods' status settle: the frame shows ready/available counts.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut child = tokio::process::Command::new(PLUGIN)
        .args(["get", "app", "-w", "-n", &ns])
        .env("KUBECONFIG", support::kubeconfig_path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the plugin starts");
    let mut stdout = child.stdout.take().expect("stdout");
    let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let output = output.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                output.lock().expect("lock").push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let frames =
        |text: &str| text.split("--- ").filter(|f| !f.is_empty()).map(str::to_string).collect::<Vec<_>>();
    let text = || output.lock().expect("lock").clone();

    // Five seconds of a quiet wait: the countdown moves, the content does not: one frame.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let quiet = frames(&text());
    assert_eq!(quiet.len(), 1, "a frame without a change:\n{}", text());
    assert!(
        line(quiet[0].split_once('\n').map_or("", |x| x.1), "Step:").starts_with("Step:       1/3"),
        "{}",
        quiet[0]
    );
    assert!(!quiet[0].contains('\x1b'), "plain when piped");

    // A change: new frames, the last at step 2.
    ok(&ns, &["promote", "app"]).await;
    wait_status(&client, &ns, "app", "waiting at step 2", secs(30), |s| {
        s.phase == Some(Phase::Waiting) && s.current_step == Some(2)
    })
    .await;
    support::wait_until("a frame at step 2", secs(10), || async {
        frames(&text())
            .last()
            .is_some_and(|f| f.contains("Step:       2/3") && f.contains("Phase:      Waiting"))
    })
    .await;
    assert!(frames(&text()).len() >= 2);

    // Ctrl-C.
    let pid = child.id().expect("running").to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().expect("kill").success());
    let status =
        tokio::time::timeout(secs(10), child.wait()).await.expect("exits on SIGINT").expect("status");
    assert_eq!(status.code(), Some(0));
    reader.await.expect("reader");

    // --until-done: ends by itself once the rollout is Done and Ready.
    let (run, _) = tokio::join!(plugin(&ns, &["get", "app", "-w", "--until-done"]), async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        ok(&ns, &["promote", "app", "--full"]).await
    });
    assert_eq!(run.code, 0, "{run:#?}");
    let all = frames(&run.stdout);
    assert!(all.first().is_some_and(|f| f.contains("Step:       2/3")), "{}", run.stdout);
    let last = all.last().expect("a frame");
    assert!(last.contains("Phase:      Done") && last.contains("100% on 2.0.0"), "{last}");
    support::delete_namespace(&client, &ns).await;
}
