//! An extra RabbitMQ node of a test's own, for tests that stop, restart, kill
//! or starve a broker: things they must never do to the shared node on 5672.
//!
//! Include it with `#[path = "support/broker_node.rs"] mod broker_node;` (or
//! `mod broker_node;` from `tests/support/mod.rs`). It depends on std, `uuid`
//! and `nix` only.
//!
//! ```ignore
//! let node = BrokerNode::start(BrokerOpts::default());
//! let url = node.amqp_url();      // amqp://guest:guest@127.0.0.1:PORT/%2f
//! node.stop();                    // rabbitmqctl stop; the port closes
//! node.start_again();             // same data, same ports
//! node.kill();                    // SIGKILL the Erlang VM
//! node.set_memory_watermark(0.0001); // publishers now get blocked
//! ```
//!
//! **Starting a node takes several seconds** (about 5 to 10 s on a 2-core
//! machine, more when the machine is busy), and so does every `start_again`.
//! Start one node per test that needs it and reuse it within the test; leave
//! everything else on the shared broker.
//!
//! How the node is made:
//! - a fresh node name, `chit-test-<8 hex>@localhost`, and two free ports
//!   (found by binding port 0) for AMQP (`RABBITMQ_NODE_PORT`) and Erlang
//!   distribution (`RABBITMQ_DIST_PORT`), both on 127.0.0.1;
//! - its mnesia, logs, pid file, plugins file (no plugins) and `rabbitmq.conf`
//!   in a temporary directory owned by the `rabbitmq` user, so nothing from
//!   `/etc/rabbitmq` applies (that config pins the listener to 5672);
//! - run as the `rabbitmq` user (`runuser` when the tests run as root) with
//!   `HOME=/var/lib/rabbitmq`, so it has the shared node's Erlang cookie and
//!   `rabbitmqctl -n NODE` reaches it.
//!
//! It needs RabbitMQ's Debian package (or `rabbitmq-server` and `rabbitmqctl`
//! on PATH) and tests run as root or as `rabbitmq`; `deploy/local/ensure-services.sh`
//! sets that up. Every wait has a deadline and a failure panics with the tail
//! of the node's log. Dropping the node stops it (SIGKILL if it will not stop)
//! and removes its directory.

#![allow(dead_code, unreachable_pub)]

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Home of the `rabbitmq` user, where the shared node's `.erlang.cookie` is.
const RABBITMQ_HOME: &str = "/var/lib/rabbitmq";
/// The server script itself; `/usr/sbin/rabbitmq-server` on Debian is a
/// wrapper that would send our node's console to the shared node's log.
const DEBIAN_SERVER_SCRIPT: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
/// How long `stop` and `kill` wait for the node to go away.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// How to start a [`BrokerNode`].
#[derive(Debug, Clone)]
pub struct BrokerOpts {
    /// Lines added to the node's `rabbitmq.conf` (new-style `key = value`),
    /// e.g. `vm_memory_high_watermark.relative = 0.0001` or `loopback_users = none`.
    pub config_lines: Vec<String>,
    /// How long `start` and `start_again` wait for the node to answer.
    pub start_timeout: Duration,
}

impl Default for BrokerOpts {
    fn default() -> BrokerOpts {
        BrokerOpts {
            config_lines: Vec::new(),
            start_timeout: Duration::from_secs(120),
        }
    }
}

impl BrokerOpts {
    /// Adds one line to the node's `rabbitmq.conf`.
    pub fn config(mut self, line: impl Into<String>) -> BrokerOpts {
        self.config_lines.push(line.into());
        self
    }

    /// Starts the node with this memory high watermark (a fraction of RAM);
    /// a tiny one (0.0001) blocks publishers from the first message.
    pub fn memory_watermark(self, fraction: f64) -> BrokerOpts {
        self.config(format!(
            "vm_memory_high_watermark.relative = {}",
            decimal(fraction)
        ))
    }

    /// Lets `guest` log in from any address, not only from loopback.
    pub fn loopback_users_none(self) -> BrokerOpts {
        self.config("loopback_users = none")
    }

    /// Sets how long starting may take before the test panics.
    pub fn start_timeout(mut self, timeout: Duration) -> BrokerOpts {
        self.start_timeout = timeout;
        self
    }
}

/// A RabbitMQ node of the test's own, stopped and removed on drop.
#[derive(Debug)]
pub struct BrokerNode {
    name: String,
    amqp_port: u16,
    dist_port: u16,
    dir: PathBuf,
    opts: BrokerOpts,
    /// `runuser` (or the server script) for the node's current run.
    child: Option<Child>,
}

impl BrokerNode {
    /// Starts a fresh node and waits until `rabbitmqctl -n NODE await_startup`
    /// succeeds and its AMQP port accepts TCP. Takes several seconds.
    pub fn start(opts: BrokerOpts) -> BrokerNode {
        let short = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        let name = format!("chit-test-{short}@localhost");
        let (amqp_port, dist_port) = free_ports();
        let dir = std::env::temp_dir().join(format!("chit-broker-{short}"));
        let mut node = BrokerNode {
            name,
            amqp_port,
            dist_port,
            dir,
            opts,
            child: None,
        };
        node.prepare_dir();
        node.spawn();
        node.wait_started();
        node
    }

    /// The node's name, `chit-test-<8 hex>@localhost`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's AMQP port on 127.0.0.1.
    pub fn amqp_port(&self) -> u16 {
        self.amqp_port
    }

    /// The node's Erlang distribution port on 127.0.0.1.
    pub fn dist_port(&self) -> u16 {
        self.dist_port
    }

    /// The node's temporary directory (mnesia, logs, config).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`: the default vhost, as guest.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// Whether the node's process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The operating-system pid of the node's Erlang VM (from its pid file).
    pub fn beam_pid(&self) -> Option<i32> {
        fs::read_to_string(self.dir.join("node.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Stops the node with `rabbitmqctl -n NODE stop` and waits until its
    /// process has exited and its AMQP port is closed. Data stays for
    /// [`start_again`](Self::start_again).
    pub fn stop(&mut self) {
        if let Err(e) = self.try_ctl(&["stop"]) {
            panic!(
                "rabbitmqctl stop on {} failed: {e}\n{}",
                self.name,
                self.log_tail()
            );
        }
        self.wait_exited("stop");
    }

    /// Starts the stopped (or killed) node again with the same name, data
    /// directory and ports, and waits as [`start`](Self::start) does.
    pub fn start_again(&mut self) {
        assert!(
            !self.is_running(),
            "start_again: node {} is still running",
            self.name
        );
        self.spawn();
        self.wait_started();
    }

    /// Kills the node's Erlang VM with SIGKILL (no clean shutdown), then
    /// waits until the process is gone and the AMQP port is closed.
    pub fn kill(&mut self) {
        let pid = self
            .beam_pid()
            .unwrap_or_else(|| panic!("no pid file for node {}", self.name));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap_or_else(|e| panic!("SIGKILL {pid} ({}): {e}", self.name));
        self.wait_exited("kill");
    }

    /// Sets the memory high watermark of the running node
    /// (`rabbitmqctl set_vm_memory_high_watermark`); 0.0001 blocks publishers,
    /// 0.4 (the default) unblocks them.
    pub fn set_memory_watermark(&self, fraction: f64) {
        self.ctl(&["set_vm_memory_high_watermark", &decimal(fraction)]);
    }

    /// Runs `rabbitmqctl -q -n NODE ARGS` and returns its standard output;
    /// panics if it fails.
    pub fn ctl(&self, args: &[&str]) -> String {
        self.try_ctl(args)
            .unwrap_or_else(|e| panic!("rabbitmqctl -n {} {args:?} failed: {e}", self.name))
    }

    /// Runs `rabbitmqctl -q -n NODE ARGS`: standard output, or the exit status
    /// and standard error.
    pub fn try_ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(sbin("rabbitmqctl"))
            .args(["-q", "-n", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run rabbitmqctl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ))
        }
    }

    /// Whether something accepts TCP on the node's AMQP port right now.
    pub fn port_open(&self) -> bool {
        port_open(self.amqp_port)
    }

    /// The last lines of the node's console output and log file.
    pub fn log_tail(&self) -> String {
        let mut s = String::new();
        let mut files = vec![self.dir.join("console.log")];
        if let Ok(entries) = fs::read_dir(self.dir.join("log")) {
            files.extend(entries.flatten().map(|e| e.path()));
        }
        for f in files {
            if let Ok(text) = fs::read_to_string(&f) {
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(50);
                s.push_str(&format!("--- {} ---\n", f.display()));
                s.push_str(&lines[from..].join("\n"));
                s.push('\n');
            }
        }
        s
    }

    fn prepare_dir(&self) {
        fs::create_dir_all(self.dir.join("mnesia")).expect("create node dir");
        fs::create_dir_all(self.dir.join("log")).expect("create node log dir");
        fs::write(self.dir.join("enabled_plugins"), "[].\n").expect("write plugins file");
        // Our own (empty) env file, so /etc/rabbitmq/rabbitmq-env.conf does not
        // rename the node or change its flags.
        fs::write(
            self.dir.join("rabbitmq-env.conf"),
            "# written by tests/support/broker_node.rs\n",
        )
        .expect("write env file");
        let mut conf = format!(
            "# written by tests/support/broker_node.rs\nlisteners.tcp.1 = 127.0.0.1:{}\n",
            self.amqp_port
        );
        for line in &self.opts.config_lines {
            conf.push_str(line);
            conf.push('\n');
        }
        fs::write(self.dir.join("rabbitmq.conf"), conf).expect("write rabbitmq.conf");
        if running_as_root() {
            let status = Command::new("chown")
                .args(["-R", "rabbitmq:rabbitmq"])
                .arg(&self.dir)
                .status()
                .expect("run chown");
            assert!(status.success(), "chown -R rabbitmq {}", self.dir.display());
        }
    }

    fn spawn(&mut self) {
        let console = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("console.log"))
            .expect("open console log");
        let d = |p: &str| self.dir.join(p).display().to_string();
        let vars = [
            ("HOME", RABBITMQ_HOME.to_string()),
            ("RABBITMQ_NODENAME", self.name.clone()),
            ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".into()),
            ("RABBITMQ_NODE_PORT", self.amqp_port.to_string()),
            ("RABBITMQ_DIST_PORT", self.dist_port.to_string()),
            ("RABBITMQ_MNESIA_BASE", d("mnesia")),
            ("RABBITMQ_LOG_BASE", d("log")),
            ("RABBITMQ_PID_FILE", d("node.pid")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins")),
            ("RABBITMQ_CONFIG_FILE", d("rabbitmq.conf")),
            ("RABBITMQ_ADVANCED_CONFIG_FILE", d("advanced.config")),
            ("RABBITMQ_CONF_ENV_FILE", d("rabbitmq-env.conf")),
            (
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}".into(),
            ),
            ("ERL_EPMD_ADDRESS", "127.0.0.1".into()),
        ];
        let mut cmd = if running_as_root() {
            let mut c = Command::new(sbin("runuser"));
            c.args(["-u", "rabbitmq", "--", "env"]);
            c
        } else {
            Command::new("env")
        };
        cmd.args(vars.iter().map(|(k, v)| format!("{k}={v}")));
        cmd.arg(server_script());
        cmd.current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("clone log handle"))
            .stderr(console);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start rabbitmq-server for {}: {e}", self.name));
        self.child = Some(child);
    }

    /// Waits for the AMQP port, then for `await_startup`, within the deadline.
    fn wait_started(&mut self) {
        let timeout = self.opts.start_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running() {
                panic!(
                    "node {} exited while starting\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if self.port_open() {
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "node {} did not open port {} within {timeout:?}\n{}",
                    self.name,
                    self.amqp_port,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        loop {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .as_secs()
                .max(1);
            match self.try_ctl(&["await_startup", "--timeout", &left.to_string()]) {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => panic!(
                    "node {} did not finish booting within {timeout:?}: {e}\n{}",
                    self.name,
                    self.log_tail()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    /// Waits until the node's process has exited and its port is closed.
    fn wait_exited(&mut self, what: &str) {
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.is_running() || self.port_open() {
            if Instant::now() > deadline {
                panic!(
                    "node {} still up {STOP_TIMEOUT:?} after {what}\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

impl Drop for BrokerNode {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.try_ctl(&["stop"]);
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if self.is_running() {
                if let Some(pid) = self.beam_pid() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                if let Some(child) = self.child.as_mut() {
                    let _ = child.kill();
                }
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Two distinct free ports on 127.0.0.1, found by binding port 0 (both
/// listeners are held until both ports are known).
fn free_ports() -> (u16, u16) {
    let bind = || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind port 0");
    let a = bind();
    let b = bind();
    let ports = (
        a.local_addr().expect("local addr").port(),
        b.local_addr().expect("local addr").port(),
    );
    drop((a, b));
    ports
}

fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

fn running_as_root() -> bool {
    // The owner of /proc/self is the process's effective uid.
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A tool from /usr/sbin or /sbin, which a non-login PATH may lack.
fn sbin(name: &str) -> PathBuf {
    ["/usr/sbin", "/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn server_script() -> &'static str {
    if Path::new(DEBIAN_SERVER_SCRIPT).exists() {
        DEBIAN_SERVER_SCRIPT
    } else {
        "rabbitmq-server"
    }
}

/// A fraction written the way rabbitmqctl and rabbitmq.conf read it: always
/// with a decimal point, never in exponent form.
fn decimal(fraction: f64) -> String {
    let s = format!("{fraction}");
    if s.contains('.') { s } else { format!("{s}.0") }
}
