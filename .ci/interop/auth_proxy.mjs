// A header-injecting HTTP proxy for clients that cannot send a bearer credential (the official
// conformance suite): every request is forwarded to TARGET unchanged (Host and Origin included,
// so the server's DNS-rebinding checks see what the client sent) plus `Authorization`.
// Responses, server-sent event streams included, are piped back as they arrive.
//
//   node auth_proxy.mjs TARGET_ORIGIN   (PROXY_AUTHORIZATION="Bearer …" in the environment)
// Prints `proxy listening on http://127.0.0.1:PORT` once ready.
import http from "node:http";

const target = new URL(process.argv[2] ?? "");
const authorization = process.env.PROXY_AUTHORIZATION;
if (!authorization) {
  console.error("PROXY_AUTHORIZATION is not set");
  process.exit(2);
}

const server = http.createServer((req, res) => {
  const headers = { ...req.headers, authorization };
  const upstream = http.request(
    {
      host: target.hostname,
      port: target.port,
      method: req.method,
      path: req.url,
      headers,
    },
    (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    },
  );
  upstream.on("error", (e) => {
    if (!res.headersSent) {
      res.writeHead(502, { "content-type": "text/plain" });
    }
    res.end(`proxy: ${e.message}`);
  });
  res.on("close", () => upstream.destroy());
  req.pipe(upstream);
});

server.listen(0, "127.0.0.1", () => {
  console.log(`proxy listening on http://127.0.0.1:${server.address().port}`);
});
