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
//!
//! // A TLS listener of its own beside the plain one:
//! let node = BrokerNode::start(BrokerOpts::default().tls(NodeTls::verify_peer(ca, cert, key)));
//! let url = node.amqps_url();     // amqps://guest:guest@127.0.0.1:TLSPORT/%2f
//!
//! // Three nodes clustered (quorum queues span them), stopped on drop:
//! let cluster = BrokerCluster::start(3, BrokerOpts::default());
//! let urls = cluster.amqp_url_list(); // all three, comma-separated
//! let leader = cluster.queue_leader("/", "chit.tasks.noop");
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
//! A TLS listener ([`BrokerOpts::tls`]) gets a third free port; the CA,
//! certificate and key are copied into the node's directory, where the
//! `rabbitmq` user can read them, and set as `ssl_options` (RabbitMQ 3.10's
//! `rabbitmq.conf` keys).
//!
//! A cluster ([`BrokerCluster`]) is that many such nodes, booted side by
//! side, the second and later ones joined to the first (`stop_app`, `reset`,
//! `join_cluster`, `start_app`); they share the Erlang cookie through
//! `HOME`. Starting one takes about three nodes' boot time, so the
//! cluster's default start timeout is longer.
//!
//! It needs RabbitMQ's Debian package (or `rabbitmq-server` and `rabbitmqctl`
//! on PATH) and tests run as root or as `rabbitmq`; `deploy/local/ensure-services.sh`
//! sets that up. Every wait has a deadline and a failure panics with the tail
//! of the node's log. Dropping the node stops it (SIGKILL if it will not stop)
//! and removes its directory (kept when `CHIT_TEST_KEEP_BROKER_DIRS` is set).

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
    /// A TLS listener beside the plain one, when set.
    pub tls: Option<NodeTls>,
}

impl Default for BrokerOpts {
    fn default() -> BrokerOpts {
        BrokerOpts {
            config_lines: Vec::new(),
            start_timeout: Duration::from_secs(120),
            tls: None,
        }
    }
}

/// The files and peer checks of a node's TLS listener (PEM files; they are
/// copied into the node's directory).
#[derive(Debug, Clone)]
pub struct NodeTls {
    /// CA bundle the node trusts for client certificates.
    pub ca: PathBuf,
    /// The node's certificate.
    pub cert: PathBuf,
    /// The node's private key.
    pub key: PathBuf,
    /// `ssl_options.verify = verify_peer`: check a client certificate sent.
    pub verify_peer: bool,
    /// `ssl_options.fail_if_no_peer_cert`: refuse a client that sends none.
    pub fail_if_no_peer_cert: bool,
}

impl NodeTls {
    /// A listener that requires a client certificate signed by `ca`.
    pub fn verify_peer(
        ca: impl Into<PathBuf>,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> NodeTls {
        NodeTls {
            ca: ca.into(),
            cert: cert.into(),
            key: key.into(),
            verify_peer: true,
            fail_if_no_peer_cert: true,
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

    /// Adds a TLS listener on a port of its own ([`BrokerNode::amqps_url`]).
    pub fn tls(mut self, tls: NodeTls) -> BrokerOpts {
        self.tls = Some(tls);
        self
    }
}

/// A RabbitMQ node of the test's own, stopped and removed on drop.
#[derive(Debug)]
pub struct BrokerNode {
    name: String,
    amqp_port: u16,
    dist_port: u16,
    /// The TLS listener's port, when the node has one.
    tls_port: Option<u16>,
    dir: PathBuf,
    opts: BrokerOpts,
    /// `runuser` (or the server script) for the node's current run.
    child: Option<Child>,
}

impl BrokerNode {
    /// Starts a fresh node and waits until `rabbitmqctl -n NODE await_startup`
    /// succeeds and its AMQP port accepts TCP. Takes several seconds.
    pub fn start(opts: BrokerOpts) -> BrokerNode {
        let mut node = BrokerNode::launch(opts);
        node.wait_started();
        node
    }

    /// Makes a fresh node and starts its process, without waiting for it.
    fn launch(opts: BrokerOpts) -> BrokerNode {
        let ports = free_ports(ports_per_node(&opts));
        BrokerNode::launch_on(opts, &ports)
    }

    /// [`launch`](Self::launch) on given ports: AMQP, distribution, then TLS.
    fn launch_on(opts: BrokerOpts, ports: &[u16]) -> BrokerNode {
        let short = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        let name = format!("chit-test-{short}@localhost");
        let dir = std::env::temp_dir().join(format!("chit-broker-{short}"));
        let mut node = BrokerNode {
            name,
            amqp_port: ports[0],
            dist_port: ports[1],
            tls_port: ports.get(2).copied(),
            dir,
            opts,
            child: None,
        };
        node.prepare_dir();
        node.spawn();
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

    /// The TLS listener's port on 127.0.0.1; panics if the node has none.
    pub fn amqps_port(&self) -> u16 {
        self.tls_port
            .unwrap_or_else(|| panic!("node {} has no TLS listener", self.name))
    }

    /// `amqps://guest:guest@127.0.0.1:TLSPORT/%2f`; panics without a TLS listener.
    pub fn amqps_url(&self) -> String {
        format!("amqps://guest:guest@127.0.0.1:{}/%2f", self.amqps_port())
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
        if let (Some(tls), Some(port)) = (&self.opts.tls, self.tls_port) {
            fs::create_dir_all(self.dir.join("tls")).expect("create node tls dir");
            let copy = |from: &Path, to: &str| {
                let dest = self.dir.join("tls").join(to);
                fs::copy(from, &dest)
                    .unwrap_or_else(|e| panic!("copy {} for the node: {e}", from.display()));
                dest.display().to_string()
            };
            conf.push_str(&format!("listeners.ssl.default = 127.0.0.1:{port}\n"));
            conf.push_str(&format!(
                "ssl_options.cacertfile = {}\n",
                copy(&tls.ca, "ca.pem")
            ));
            conf.push_str(&format!(
                "ssl_options.certfile = {}\n",
                copy(&tls.cert, "cert.pem")
            ));
            conf.push_str(&format!(
                "ssl_options.keyfile = {}\n",
                copy(&tls.key, "key.pem")
            ));
            let verify = if tls.verify_peer {
                "verify_peer"
            } else {
                "verify_none"
            };
            conf.push_str(&format!("ssl_options.verify = {verify}\n"));
            conf.push_str(&format!(
                "ssl_options.fail_if_no_peer_cert = {}\n",
                tls.fail_if_no_peer_cert
            ));
        }
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
            if self.port_open() && self.tls_port.is_none_or(port_open) {
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
        // CHIT_TEST_KEEP_BROKER_DIRS=1 keeps the logs and data of a failed
        // run to look at.
        if std::env::var_os("CHIT_TEST_KEEP_BROKER_DIRS").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("kept node {} directory {}", self.name, self.dir.display());
        }
    }
}

/// Ports a node takes: AMQP and distribution, and TLS when it has a listener.
fn ports_per_node(opts: &BrokerOpts) -> usize {
    if opts.tls.is_some() { 3 } else { 2 }
}

/// `n` distinct free ports on 127.0.0.1, found by binding port 0 (every
/// listener is held until all ports are known).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind port 0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
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

/// Several [`BrokerNode`]s clustered together, each on ports of its own;
/// every node still running is stopped, and its directory removed, on drop.
#[derive(Debug)]
pub struct BrokerCluster {
    nodes: Vec<BrokerNode>,
}

impl BrokerCluster {
    /// Boots `size` fresh nodes side by side, joins the second and later
    /// ones to the first, and waits until every node reports all `size`
    /// running. `opts.start_timeout` bounds the boot and, again, the joining.
    pub fn start(size: usize, opts: BrokerOpts) -> BrokerCluster {
        assert!(size >= 1, "a cluster has at least one node");
        // All ports at once, so no node is given a port another has been
        // given and not bound yet.
        let per = ports_per_node(&opts);
        let ports = free_ports(per * size);
        let mut cluster = BrokerCluster {
            nodes: Vec::with_capacity(size),
        };
        for chunk in ports.chunks(per) {
            cluster
                .nodes
                .push(BrokerNode::launch_on(opts.clone(), chunk));
        }
        for node in &mut cluster.nodes {
            node.wait_started();
        }
        let seed = cluster.nodes[0].name.clone();
        for node in &cluster.nodes[1..] {
            for args in [
                &["stop_app"][..],
                &["reset"],
                &["join_cluster", &seed],
                &["start_app"],
            ] {
                if let Err(e) = node.try_ctl(args) {
                    panic!(
                        "{args:?} on {} (joining {seed}) failed: {e}\n{}",
                        node.name,
                        node.log_tail()
                    );
                }
            }
        }
        cluster.wait_running(size, opts.start_timeout);
        cluster
    }

    /// The nodes, in the order they were started (the first is the seed).
    pub fn nodes(&self) -> &[BrokerNode] {
        &self.nodes
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &BrokerNode {
        &self.nodes[i]
    }

    /// Node `i`, to stop, kill or restart it.
    pub fn node_mut(&mut self, i: usize) -> &mut BrokerNode {
        &mut self.nodes[i]
    }

    /// The position of the node named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Every node's `amqp_url()`, in node order.
    pub fn amqp_urls(&self) -> Vec<String> {
        self.nodes.iter().map(BrokerNode::amqp_url).collect()
    }

    /// Every node's URL, comma-separated, starting with node `first`: the
    /// list a client is configured with to fail over between nodes.
    pub fn amqp_url_list_from(&self, first: usize) -> String {
        let urls = self.amqp_urls();
        let n = urls.len();
        (0..n)
            .map(|i| urls[(first + i) % n].clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// [`amqp_url_list_from`](Self::amqp_url_list_from) node 0.
    pub fn amqp_url_list(&self) -> String {
        self.amqp_url_list_from(0)
    }

    /// Runs `rabbitmqctl -q -n NODE ARGS` on the first node that answers.
    pub fn try_ctl(&self, args: &[&str]) -> Result<String, String> {
        let mut last = Err("no node is running".to_owned());
        for node in &self.nodes {
            if !node.port_open() {
                continue;
            }
            last = node.try_ctl(args);
            if last.is_ok() {
                return last;
            }
        }
        last
    }

    /// The names of the nodes the cluster reports running, as the first
    /// answering node sees them (`cluster_status`).
    pub fn running_nodes(&self) -> Result<Vec<String>, String> {
        let json = self.try_ctl(&["cluster_status", "--formatter", "json"])?;
        Ok(json_string_list(&json, "running_nodes"))
    }

    /// Waits until the cluster reports `count` running nodes, all of them ours.
    pub fn wait_running(&self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.running_nodes();
            if let Ok(names) = &seen
                && names.len() == count
                && names.iter().all(|n| self.index_of(n).is_some())
            {
                return;
            }
            if Instant::now() > deadline {
                let tails: String = self.nodes.iter().map(BrokerNode::log_tail).collect();
                panic!(
                    "cluster did not report {count} running nodes within {timeout:?}: {seen:?}\n{tails}"
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `rabbitmqctl list_queues` of `vhost` with each queue's type, leader,
    /// members, running members and depth, for a failing test's message.
    pub fn describe_queues(&self, vhost: &str) -> String {
        let columns = ["name", "type", "leader", "members", "online", "messages"];
        let mut args = vec!["list_queues", "-p", vhost];
        args.extend(columns);
        match self.try_ctl(&args) {
            Ok(table) => format!("{}\n{table}", columns.join("\t")),
            Err(e) => format!("list_queues failed: {e}"),
        }
    }

    /// The leader node and the member nodes of quorum queue `queue` in
    /// `vhost`, as `rabbitmqctl list_queues` shows them; `None` while it has
    /// no leader (or does not exist).
    pub fn queue_leader(&self, vhost: &str, queue: &str) -> Option<(String, Vec<String>)> {
        let out = self
            .try_ctl(&[
                "list_queues",
                "-p",
                vhost,
                "name",
                "leader",
                "members",
                "--formatter",
                "json",
            ])
            .ok()?;
        // One object per queue, `{"name":"..","leader":"..","members":[..]}`;
        // a queue name never holds a `}`.
        let object = out
            .split('}')
            .find(|o| o.contains(&format!("\"name\":\"{queue}\"")))?;
        let leader = json_string_list(object, "leader").into_iter().next()?;
        let members = json_string_list(object, "members");
        (leader.contains('@')).then_some((leader, members))
    }
}

impl Drop for BrokerCluster {
    fn drop(&mut self) {
        // Side by side: each node's own drop stops it (up to 30 s) and
        // removes its directory.
        let nodes = std::mem::take(&mut self.nodes);
        std::thread::scope(|scope| {
            for node in nodes {
                scope.spawn(move || drop(node));
            }
        });
    }
}

/// The strings of the JSON value under `"key"` in `json`: a string, or a
/// list of strings (what `rabbitmqctl --formatter json` prints for node
/// names). Enough JSON for node and queue names, which hold no quotes.
fn json_string_list(json: &str, key: &str) -> Vec<String> {
    let Some(at) = json.find(&format!("\"{key}\":")) else {
        return Vec::new();
    };
    let rest = json[at + key.len() + 3..].trim_start();
    let value = if rest.starts_with('[') {
        &rest[1..rest.find(']').unwrap_or(rest.len())]
    } else {
        rest.split([',', '}']).next().unwrap_or("")
    };
    value
        .split(',')
        .map(|v| v.trim().trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}
