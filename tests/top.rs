//! `drover top` in a real terminal: tmux runs it against a `drover up`
//! cluster; the test reads the screen (capture-pane) and types keys.

mod common;
use common::Cluster;
use std::process::Command;
use std::time::Duration;

/// A tmux server of this test's own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("tmux is needed");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    fn alive(&self) -> bool {
        Command::new("tmux").args(["-L", &self.socket, "has-session", "-t", "top"]).status().is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).status();
    }
}

#[test]
fn top_shows_nodes_jobs_and_events_and_filters_by_user() {
    let c = Cluster::start("top", 2, 0);
    let job = c.submit(&["-J", "top-sleeper", "--wrap", "sleep 60"]);
    let tmux = Tmux { socket: format!("drover-top-{}", std::process::id()) };
    let cmd =
        format!("cd {} && DROVER_CONTROLLER={} exec {} top", c.dir.display(), c.addrs(), env!("CARGO_BIN_EXE_drover"));
    tmux.run(&["new-session", "-d", "-s", "top", "-x", "140", "-y", "40", &cmd]);
    let mut screen = String::new();
    c.wait_for("top shows both nodes and the running job", Duration::from_secs(15), || {
        screen = tmux.screen();
        screen.contains("node1") && screen.contains("node2") && screen.contains("top-sleeper") && screen.contains(" R ")
    });
    assert!(screen.contains("nodes 2/2  running 1  pending 0"), "{screen}");
    assert!(screen.contains(&format!("started {job}")), "recent events list the start: {screen}");

    // A job submitted now shows within a refresh.
    c.submit(&["-J", "top-second", "--wrap", "sleep 60"]);
    c.wait_for("the second job", Duration::from_secs(5), || tmux.screen().contains("top-second"));

    // u, a name, Enter: only that user's jobs; c clears.
    tmux.run(&["send-keys", "-t", "top", "u", "nobody", "Enter"]);
    c.wait_for("filtered to user nobody", Duration::from_secs(5), || {
        screen = tmux.screen();
        screen.contains("user=nobody") && !screen.contains("top-sleeper")
    });
    tmux.run(&["send-keys", "-t", "top", "c"]);
    c.wait_for("filter cleared", Duration::from_secs(5), || tmux.screen().contains("top-sleeper"));
    tmux.run(&["send-keys", "-t", "top", "p", "debug", "Enter"]);
    c.wait_for("filtered to partition debug", Duration::from_secs(5), || {
        screen = tmux.screen();
        screen.contains("partition=debug") && screen.contains("top-sleeper")
    });

    tmux.run(&["send-keys", "-t", "top", "q"]);
    c.wait_for("top quits on q", Duration::from_secs(5), || !tmux.alive());
}
