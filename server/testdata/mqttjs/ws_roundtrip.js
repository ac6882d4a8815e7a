// MQTT.js over WebSocket against a Tern listener, for TestMQTTJSOverWebSocket.
// Usage: node ws_roundtrip.js URL PROTOCOL_VERSION PAYLOAD_BYTES
// Subscribes, publishes one JSON-ish payload of PAYLOAD_BYTES at QoS 1 to
// itself, checks it comes back whole, ends cleanly, and prints one JSON
// line: {"ok":true,...} or {"ok":false,"error":"..."}; exit status 0 or 1.
const mqtt = require('mqtt');

const [url, version, size] = process.argv.slice(2);
const unit = '{"sensor":"temperature","value":21.5,"unit":"C"},';
const payload = Buffer.from(unit.repeat(Math.ceil(Number(size) / unit.length)).slice(0, Number(size)));
const topic = 'mqttjs/' + process.pid;

function done(result) {
  console.log(JSON.stringify(result));
  process.exit(result.ok ? 0 : 1);
}
setTimeout(() => done({ ok: false, error: 'timeout' }), 15000);

const client = mqtt.connect(url, {
  protocolVersion: Number(version),
  clientId: 'mqttjs-' + process.pid,
  reconnectPeriod: 0,
  connectTimeout: 5000,
  // The Node "ws" package offers permessage-deflate when asked.
  wsOptions: { perMessageDeflate: true },
});
client.on('error', (err) => done({ ok: false, error: String(err) }));
client.on('connect', () => {
  client.subscribe(topic, { qos: 1 }, (err, granted) => {
    if (err || !granted || granted[0].qos !== 1) {
      return done({ ok: false, error: 'subscribe: ' + (err || JSON.stringify(granted)) });
    }
    client.publish(topic, payload, { qos: 1 }, (err) => {
      if (err) done({ ok: false, error: 'publish: ' + err });
    });
  });
});
client.on('message', (t, msg) => {
  if (t !== topic || !msg.equals(payload)) {
    return done({ ok: false, error: `got ${msg.length} bytes on ${t}, want ${payload.length} on ${topic}` });
  }
  client.end(false, {}, () => done({ ok: true, bytes: msg.length }));
});
