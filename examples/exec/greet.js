#!/usr/bin/env node
// A chit exec worker in Node.js: greets the name the task carries.
//
// Run it with:  chit worker exec greet -- node examples/exec/greet.js

const chunks = [];
process.stdin.on("data", (chunk) => chunks.push(chunk));
process.stdin.on("end", () => {
  const task = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  const name = (task.inputData && task.inputData.name) || "World";
  const result = {
    status: "COMPLETED",
    output: { message: `Hello ${name}` },
    logs: [`Processed greeting for ${name}`],
  };
  process.stdout.write(JSON.stringify(result) + "\n");
});
