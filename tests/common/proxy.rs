//! A TCP proxy a test can shut to make a server unreachable.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// A TCP proxy on 127.0.0.1 to a server (a database, a broker): shut, it
/// refuses new connections and cuts the open ones.
pub struct Proxy {
    pub port: u16,
    upstream: SocketAddr,
    running: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Proxy {
    pub async fn start(upstream_url: &str) -> Arc<Proxy> {
        let u = reqwest::Url::parse(upstream_url).unwrap();
        let upstream: SocketAddr = format!(
            "{}:{}",
            u.host_str().unwrap(),
            u.port_or_known_default().unwrap_or(match u.scheme() {
                "mysql" => 3306,
                "amqp" => 5672,
                "nats" => 4222,
                "mqtt" => 1883,
                _ => 5432,
            })
        )
        .parse()
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Arc::new(Proxy {
            port: listener.local_addr().unwrap().port(),
            upstream,
            running: Mutex::new(Vec::new()),
        });
        proxy.serve(listener);
        proxy
    }

    fn serve(self: &Arc<Self>, listener: tokio::net::TcpListener) {
        let me = Arc::clone(self);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = me.upstream;
                let conn = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(upstream).await {
                        tokio::io::copy_bidirectional(&mut inbound, &mut out)
                            .await
                            .ok();
                    }
                });
                me.running.lock().unwrap().push(conn);
            }
        });
        self.running.lock().unwrap().push(accept);
    }

    /// Refuses connections from now on and cuts the open ones.
    pub async fn stop(&self) {
        let tasks: Vec<_> = self.running.lock().unwrap().drain(..).collect();
        for t in tasks {
            t.abort();
            t.await.ok();
        }
    }

    /// Takes connections again on the same port.
    pub async fn restart(self: &Arc<Self>) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket
            .bind(format!("127.0.0.1:{}", self.port).parse().unwrap())
            .unwrap();
        self.serve(socket.listen(128).unwrap());
    }
}
