// kafkajs 2.2.4 against a Vltava broker: admin (CreateTopics, Metadata, ListOffsets),
// a gzip producer and an idempotent producer. Prints one JSON object on stdout; pytest checks it
// and then reads the records back with confluent-kafka.
//
// usage: node kafkajs_scenario.js BOOTSTRAP TOPIC COUNT [REPLICATION_FACTOR]
'use strict';

const { Kafka, CompressionTypes, logLevel } = require('kafkajs');

const [bootstrap, topic, countArg, rfArg] = process.argv.slice(2);
if (!bootstrap || !topic || !countArg) {
  console.error('usage: node kafkajs_scenario.js BOOTSTRAP TOPIC COUNT [REPLICATION_FACTOR]');
  process.exit(2);
}
const count = parseInt(countArg, 10);
const replicationFactor = rfArg ? parseInt(rfArg, 10) : 1;
const IDEMPOTENT_COUNT = 200;

// Never hang: whatever happens, stop after 100 s.
const watchdog = setTimeout(() => {
  console.error('kafkajs scenario: watchdog expired after 100 s');
  process.exit(3);
}, 100000);

const kafka = new Kafka({
  clientId: 'vltava-e2e-kafkajs',
  brokers: [bootstrap],
  logLevel: logLevel.WARN,
  connectionTimeout: 10000,
  requestTimeout: 30000,
  retry: { retries: 5, initialRetryTime: 200, maxRetryTime: 2000 },
});

async function main() {
  const out = {};
  const admin = kafka.admin();
  await admin.connect();
  try {
    out.created = await admin.createTopics({
      topics: [{ topic, numPartitions: 2, replicationFactor }],
      waitForLeaders: true,
      timeout: 30000,
    });
    out.createdAgain = await admin.createTopics({
      topics: [{ topic, numPartitions: 2, replicationFactor }],
      waitForLeaders: true,
      timeout: 30000,
    });
    out.topics = await admin.listTopics();
    const md = await admin.fetchTopicMetadata({ topics: [topic] });
    out.partitions = md.topics[0].partitions.map((p) => ({ partitionId: p.partitionId, leader: p.leader }));

    const producer = kafka.producer({ allowAutoTopicCreation: false });
    await producer.connect();
    out.sent = [];
    const startTs = Date.now();
    for (let base = 0; base < count; base += 100) {
      const messages = [];
      for (let i = base; i < Math.min(count, base + 100); i++) {
        messages.push({
          key: `k${i % 10}`,
          value: `kafkajs-${i}-` + 'x'.repeat(i % 300),
          headers: { src: 'kafkajs', idx: String(i) },
        });
      }
      const res = await producer.send({ topic, acks: -1, compression: CompressionTypes.GZIP, messages });
      for (const r of res) {
        out.sent.push({ partition: r.partition, baseOffset: r.baseOffset, errorCode: r.errorCode });
      }
    }
    await producer.disconnect();

    const idem = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
    await idem.connect();
    out.idempotent = [];
    for (let base = 0; base < IDEMPOTENT_COUNT; base += 50) {
      const messages = [];
      for (let i = base; i < base + 50; i++) {
        messages.push({ partition: 0, value: `idem-${i}` });
      }
      const res = await idem.send({ topic, acks: -1, messages });
      for (const r of res) {
        out.idempotent.push({ partition: r.partition, baseOffset: r.baseOffset, errorCode: r.errorCode });
      }
    }
    await idem.disconnect();

    out.offsets = await admin.fetchTopicOffsets(topic);
    out.offsetsByTimestamp = await admin.fetchTopicOffsetsByTimestamp(topic, startTs - 60000);
    out.offsetsFuture = await admin.fetchTopicOffsetsByTimestamp(topic, Date.now() + 3600000);
  } finally {
    await admin.disconnect();
  }
  return out;
}

main()
  .then((out) => {
    clearTimeout(watchdog);
    process.stdout.write(JSON.stringify(out) + '\n');
    process.exit(0);
  })
  .catch((err) => {
    clearTimeout(watchdog);
    console.error('kafkajs scenario failed:', err && err.stack ? err.stack : err);
    if (err && err.type) console.error('kafka error type:', err.type, 'code:', err.code);
    process.exit(1);
  });
