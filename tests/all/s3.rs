//! The S3-compatible server the store tests talk to: moto, started by the project's
//! own script on 127.0.0.1, stopped when this test process exits.

use std::process::Command;
use std::sync::OnceLock;

use burncache::Store;

/// The bucket the script creates.
pub const BUCKET: &str = "burncache-test";

/// A running server.
pub struct S3Server {
    pub endpoint: String,
    port: u16,
    pid: Option<u32>,
}

impl S3Server {
    /// The server shared by the tests: the one `scripts/test.sh` started (named by
    /// `BURNCACHE_TEST_S3_ENDPOINT`), or else one started for this process.
    pub fn shared() -> &'static S3Server {
        static SHARED: OnceLock<S3Server> = OnceLock::new();
        SHARED.get_or_init(|| match std::env::var("BURNCACHE_TEST_S3_ENDPOINT") {
            Ok(endpoint) => S3Server {
                port: port_of(&endpoint),
                endpoint,
                pid: None,
            },
            Err(_) => S3Server::start(None),
        })
    }

    /// A server of its own, for tests that stop and restart it.
    pub fn start(port: Option<u16>) -> S3Server {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/s3-server.sh");
        let mut command = Command::new("bash");
        command
            .arg(script)
            .arg("start")
            .arg("--owner-pid")
            .arg(std::process::id().to_string());
        if let Some(port) = port {
            command.arg("--port").arg(port.to_string());
        }
        let output = command.output().expect("run scripts/s3-server.sh");
        assert!(
            output.status.success(),
            "the S3 server did not start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = String::from_utf8_lossy(&output.stdout).to_string();
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                .to_string()
        };
        let endpoint = field("endpoint=");
        S3Server {
            port: port_of(&endpoint),
            pid: Some(field("pid=").parse().expect("a pid")),
            endpoint,
        }
    }

    /// Stops the server (it loses everything it held).
    pub fn stop(&mut self) {
        let pid = self.pid.take().expect("a server this test started");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/s3-server.sh");
        let status = Command::new("bash")
            .arg(script)
            .arg("stop")
            .arg(pid.to_string())
            .status()
            .expect("stop");
        assert!(status.success());
    }

    /// Starts it again on the same port, with an empty bucket.
    pub fn restart(&mut self) {
        let again = S3Server::start(Some(self.port));
        self.pid = again.pid;
    }

    /// The settings a client needs, as `object_store` S3 keys.
    pub fn options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("aws_endpoint", self.endpoint.clone()),
            ("aws_allow_http", "true".into()),
            ("aws_access_key_id", "test".into()),
            ("aws_secret_access_key", "test".into()),
            ("aws_region", "us-east-1".into()),
        ]
    }

    /// The same settings as environment variables, for the CLI.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// A store under a prefix of its own, so tests sharing the server do not meet.
    pub fn store(&self, prefix: &str) -> Store {
        let options = self.options();
        let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Store::from_url_with_options(&self.url(prefix), &options).expect("an S3 store")
    }

    /// `s3://burncache-test/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}-{}", std::process::id())
    }
}

fn port_of(endpoint: &str) -> u16 {
    endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("an endpoint with a port")
}
