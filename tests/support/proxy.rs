//! The taskcluster-proxy stand-in (sandbox/tc_proxy.py) in front of an emulator, and tc-ami run
//! as a task runs it: without Taskcluster credentials, through the proxy.

use super::{Server, Tc, TcAmi};

pub struct Proxy {
    pub server: Server,
}

impl Proxy {
    /// Signs as the emulator's client `(id, token)`, restricted to `scopes` (the task's scopes;
    /// none: the client's own). It stops with the test: killed on drop, and by itself when the
    /// test process is gone (`--parent-pid`).
    pub fn start(tc: &Tc, client: (&str, &str), scopes: &[&str]) -> Proxy {
        let mut args: Vec<String> = [
            "--port",
            "0",
            "--root-url",
            tc.server.url.as_str(),
            "--client-id",
            client.0,
            "--access-token",
            client.1,
            "--parent-pid",
            &std::process::id().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(scopes.iter().map(|s| s.to_string()));
        Proxy {
            server: Server::start("sandbox/tc_proxy.py", &args),
        }
    }

    pub fn url(&self) -> &str {
        &self.server.url
    }

    /// The requests it forwarded (its `Proxying <uri> | <method> | <url>` log lines).
    pub fn forwarded(&self) -> Vec<String> {
        self.server
            .log()
            .lines()
            .filter(|l| l.contains("Proxying "))
            .map(str::to_string)
            .collect()
    }
}

impl TcAmi {
    /// As inside a task with the taskcluster-proxy feature: no Taskcluster credentials, the
    /// proxy's URL, and the task's id.
    pub fn through_proxy(self, proxy: &Proxy, task_id: &str) -> Self {
        self.env_remove("TASKCLUSTER_CLIENT_ID")
            .env_remove("TASKCLUSTER_ACCESS_TOKEN")
            .env("TASKCLUSTER_PROXY_URL", proxy.url())
            .env("TASK_ID", task_id)
    }
}
