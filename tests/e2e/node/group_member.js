// One kafkajs 2.2.4 group consumer (FindCoordinator v2, JoinGroup v5, SyncGroup v3, Heartbeat v3,
// LeaveGroup v3, OffsetCommit v5, OffsetFetch v4) for test_groups_kafkajs.py.
//
// usage: node group_member.js BOOTSTRAP GROUP TOPIC NAME
//
// Prints JSON lines on stdout:
//   {"ev":"joined","parts":[...],"generation":N,"memberId":"...","leader":bool}   (GROUP_JOIN)
//   {"ev":"msg","p":P,"o":O,"v":"..."}
//   {"ev":"commit","p":P,"o":O}      after the broker acknowledged committing offset O for partition P
//   {"ev":"crash","error":"..."}     (CRASH event)
//   {"ev":"closed"}
// Commits synchronously after every batch (autoCommit off, explicit commit of lastOffset + 1).
// On "stop" on stdin (or stdin closing) it disconnects (LeaveGroup) and exits 0. Watchdog: 150 s.
'use strict';

const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, groupId, topic, name] = process.argv.slice(2);
if (!bootstrap || !groupId || !topic || !name) {
  console.error('usage: node group_member.js BOOTSTRAP GROUP TOPIC NAME');
  process.exit(2);
}

const emit = (ev, data) => process.stdout.write(JSON.stringify({ ev, t: Date.now(), ...data }) + '\n');

const watchdog = setTimeout(() => {
  console.error(`group_member ${name}: watchdog expired after 150 s`);
  process.exit(3);
}, 150000);

const kafka = new Kafka({
  clientId: `kafkajs-${name}`,
  brokers: [bootstrap],
  logLevel: logLevel.WARN,
  connectionTimeout: 10000,
  requestTimeout: 30000,
  retry: { retries: 8, initialRetryTime: 200, maxRetryTime: 2000 },
});

const consumer = kafka.consumer({
  groupId,
  sessionTimeout: 6000,
  heartbeatInterval: 500,
  rebalanceTimeout: 20000,
  maxWaitTimeInMs: 100,
  allowAutoTopicCreation: false,
  retry: { retries: 8, initialRetryTime: 200, maxRetryTime: 2000 },
});

consumer.on(consumer.events.GROUP_JOIN, (e) => {
  const p = e.payload;
  emit('joined', {
    parts: (p.memberAssignment[topic] || []).slice().sort((a, b) => a - b),
    memberId: p.memberId,
    leader: p.isLeader,
    protocol: p.groupProtocol,
  });
});
consumer.on(consumer.events.CRASH, (e) => {
  const err = e.payload.error;
  emit('crash', { error: String(err && err.stack ? err.stack : err), restart: e.payload.restart });
});

let stopping = false;
async function stop(code) {
  if (stopping) return;
  stopping = true;
  try {
    await consumer.disconnect();
    emit('closed', {});
  } catch (err) {
    console.error('disconnect failed:', err);
    code = code || 1;
  }
  clearTimeout(watchdog);
  process.exit(code);
}

process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  if (chunk.split('\n').some((l) => l.trim() === 'stop')) stop(0);
});
process.stdin.on('end', () => stop(0));

async function main() {
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachBatchAutoResolve: true,
    eachBatch: async ({ batch, heartbeat, commitOffsetsIfNecessary, isRunning, isStale }) => {
      let last = null;
      for (const m of batch.messages) {
        if (!isRunning() || isStale()) break;
        emit('msg', { p: batch.partition, o: Number(m.offset), v: m.value === null ? null : m.value.toString('latin1') });
        last = m.offset;
      }
      if (last !== null) {
        const next = (BigInt(last) + 1n).toString();
        await commitOffsetsIfNecessary({ topics: [{ topic, partitions: [{ partition: batch.partition, offset: next }] }] });
        emit('commit', { p: batch.partition, o: Number(next) });
      }
      await heartbeat();
    },
  });
  emit('running', {});
}

main().catch((err) => {
  console.error(`group_member ${name} failed:`, err && err.stack ? err.stack : err);
  emit('crash', { error: String(err), restart: false });
  clearTimeout(watchdog);
  process.exit(1);
});
