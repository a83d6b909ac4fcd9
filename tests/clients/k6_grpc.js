// k6 (its gRPC module, discovering the service by server reflection) calling floodgate:
// a second client that shares no code with the server. Bounded: ITERATIONS iterations over
// 2 virtual users. Every check must pass (threshold), so k6 exits non-zero on any mismatch.
//
//   k6 run -e TARGET=127.0.0.1:8080 -e ITERATIONS=40 tests/clients/k6_grpc.js
import grpc from 'k6/net/grpc';
import { check } from 'k6';

export const options = {
  scenarios: {
    calls: {
      executor: 'shared-iterations',
      vus: 2,
      iterations: Number(__ENV.ITERATIONS || 40),
      maxDuration: '60s',
    },
  },
  thresholds: { checks: ['rate==1'] },
};

const client = new grpc.Client();

export default function () {
  if (__ITER === 0) {
    client.connect(__ENV.TARGET, { plaintext: true, reflect: true, timeout: '10s' });
  }
  const n = (__VU * 1000 + __ITER) % 1000;
  const fast = client.invoke('floodgate.v1.ComputeService/Fast', { number: n });
  check(fast, {
    'Fast is OK': (r) => r && r.status === grpc.StatusOK,
    // uint64 fields are strings in the protobuf JSON mapping.
    'Fast is number squared': (r) => r && r.message && Number(r.message.result) === n * n,
  });
  const intensive = client.invoke('floodgate.v1.ComputeService/Intensive', { number: n });
  check(intensive, {
    'Intensive is OK': (r) => r && r.status === grpc.StatusOK,
    'Intensive has a digest': (r) => r && r.message && r.message.digest !== undefined,
  });
  const invalid = client.invoke('floodgate.v1.ComputeService/Fast', { number: 2000000 });
  check(invalid, {
    'out of range is INVALID_ARGUMENT': (r) => r && r.status === grpc.StatusInvalidArgument,
  });
  const health = client.invoke('grpc.health.v1.Health/Check', { service: '' });
  check(health, {
    'health is SERVING': (r) => r && r.status === grpc.StatusOK && r.message.status === 'SERVING',
  });
}
