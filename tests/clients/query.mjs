// One query through @clickhouse/client, as its README shows: prints the rows as JSON, or
// the error's code and message. The address, key and SQL come from the environment.
import { createClient } from '@clickhouse/client'

const client = createClient({
  url: process.env.CLICKHOUSE_URL,
  username: 'default',
  password: process.env.CLICKHOUSE_PASSWORD,
  database: process.env.CLICKHOUSE_DATABASE,
})
try {
  const result = await client.query({ query: process.env.SQL, format: 'JSONEachRow' })
  console.log(JSON.stringify({ rows: await result.json() }))
} catch (error) {
  console.log(JSON.stringify({ code: error.code, message: error.message }))
} finally {
  await client.close()
}
