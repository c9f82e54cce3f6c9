package integration

// An independent attack on the driver's three promises, after the
// adversarial suite of issue 8 (adversarial_test.go, whose helpers this file
// uses): every case is new. Each asserts the same safety properties:
//
//   - a write either fails and leaves the stored rows exactly as they were,
//     or stores no plaintext it was given and reads back as written;
//   - a read either fails or returns only known plaintexts, never a cell or
//     a wrapped key (adv.query fails any value that looks like one);
//   - the connection stays usable after a refusal.

import (
	"context"
	"strings"
	"testing"
)

// attackSeed writes users 1 and 2 (orgs 10 and 20) through the driver and
// returns their plaintexts.
func attackSeed(a *adv) (string, string) {
	a.t.Helper()
	sa, sb := sec("atk-a"), sec("atk-b")
	a.rawExec("INSERT INTO orgs (id, name) VALUES (10, 'org-ten'), (20, 'org-twenty')")
	a.seedUsers(1, 10, "alice", sa, 2, 20, "bob", sb)
	return sa, sb
}

// plainNoCells fails if a plain table now stores a cell or a wrapped key,
// which the driver would later hand to the application as plaintext.
func (a *adv) plainNoCells(table, col string) {
	a.t.Helper()
	for _, v := range a.rawValues("SELECT " + col + " FROM " + a.x(table)) {
		if leaky(v) {
			a.t.Errorf("plain column %s.%s now holds a cell or wrapped key, which reads back through the driver as if it were plaintext: %.160s", table, col, v)
		}
	}
}

// ---------------------------------------------------------------------------
// The session's search_path changes without the driver noticing: a plan
// cached under the path the driver believes in is used under another.

func TestAttackSearchPath(t *testing.T) {
	inv := []string{"{ns}_billing.invoices"}
	// invoices exists twice: plain in {ns} (the DSN's path), mapped in
	// {ns}_billing.
	ddl := advBilling + `CREATE TABLE invoices (id bigint PRIMARY KEY, email text, encrypted_kms_key text);`
	const ins = "INSERT INTO invoices (id, email) VALUES ($1, $2)"
	cases := []advCase{
		{name: "pg_settings_update_then_cached_insert", ddl: ddl, yaml: advBillingMap, run: func(a *adv) {
			a.exec(ins, 1, "plain-first@example.com") // the plain table; plan cached
			if a.try("UPDATE pg_settings SET setting = '{ns}_billing' WHERE name = 'search_path'") != nil {
				return
			}
			s := sec("pg-settings")
			a.write(inv, []string{s}, a.reads(s, "SELECT email FROM {ns}_billing.invoices WHERE id = 2"), ins, 2, s)
		}},
		{name: "pg_settings_update_then_cached_select", ddl: ddl, yaml: advBillingMap, run: func(a *adv) {
			a.rawExec("INSERT INTO invoices (id, email) VALUES (1, 'plain@example.com')")
			a.exec("INSERT INTO {ns}_billing.invoices (id, email) VALUES (1, $1)", sec("pgs-sel"))
			a.readExact("plain@example.com", "SELECT email FROM invoices WHERE id = 1")
			if a.try("UPDATE pg_settings SET setting = '{ns}_billing' WHERE name = 'search_path'") != nil {
				return
			}
			a.readSafe([]int{0}, []string{sec("pgs-sel")}, "SELECT email FROM invoices WHERE id = 1")
		}},
		{name: "user_function_sets_path_then_cached_insert", ddl: ddl + `CREATE FUNCTION setp(p text) RETURNS text LANGUAGE sql AS $$ SELECT set_config('search_path', p, false) $$;`, yaml: advBillingMap, run: func(a *adv) {
			a.exec(ins, 1, "plain-first@example.com")
			if _, err := a.query("SELECT setp('{ns}_billing')"); err != nil {
				a.t.Logf("refused: %v", err)
				a.usable()
				return
			}
			s := sec("setp")
			a.write(inv, []string{s}, a.reads(s, "SELECT email FROM {ns}_billing.invoices WHERE id = 2"), ins, 2, s)
		}},
		{name: "set_rolled_back_then_cached_insert", ddl: ddl, yaml: advBillingMap, run: func(a *adv) {
			// SET inside a transaction that rolls back: the server's path
			// reverts to {ns}, the driver keeps believing {ns}_billing.
			tx, err := a.begin()
			if err != nil {
				a.t.Fatal(err)
			}
			if _, err := tx.Exec(a.x("SET search_path = {ns}_billing")); err != nil {
				a.t.Logf("refused: %v", err)
			}
			tx.Rollback()
			a.exec(ins, 1, "plain-first@example.com") // the plain table, cached under the billing path
			if a.try("SET search_path = {ns}_billing") != nil {
				return
			}
			s := sec("rolled-back")
			a.write(inv, []string{s}, a.reads(s, "SELECT email FROM {ns}_billing.invoices WHERE id = 2"), ins, 2, s)
		}},
		{name: "set_rolled_back_then_cached_select", ddl: ddl, yaml: advBillingMap, run: func(a *adv) {
			a.rawExec("INSERT INTO invoices (id, email) VALUES (1, 'plain@example.com')")
			a.exec("INSERT INTO {ns}_billing.invoices (id, email) VALUES (1, $1)", sec("rb-sel"))
			tx, err := a.begin()
			if err != nil {
				a.t.Fatal(err)
			}
			tx.Exec(a.x("SET search_path = {ns}_billing"))
			tx.Rollback()
			a.readExact("plain@example.com", "SELECT email FROM invoices WHERE id = 1")
			if a.try("SET search_path = {ns}_billing") != nil {
				return
			}
			a.readSafe([]int{0}, []string{sec("rb-sel")}, "SELECT email FROM invoices WHERE id = 1")
		}},
		{name: "rollback_to_savepoint_then_cached_insert", ddl: ddl, yaml: advBillingMap, run: func(a *adv) {
			tx, err := a.begin()
			if err != nil {
				a.t.Fatal(err)
			}
			tx.Exec("SAVEPOINT s")
			tx.Exec(a.x("SET search_path = {ns}_billing"))
			tx.Exec("ROLLBACK TO SAVEPOINT s")
			if _, err := tx.Exec(ins, 1, "plain-first@example.com"); err != nil {
				a.t.Logf("refused: %v", err)
			}
			tx.Commit()
			if a.try("SET search_path = {ns}_billing") != nil {
				return
			}
			s := sec("savepoint")
			a.write(inv, []string{s}, a.reads(s, "SELECT email FROM {ns}_billing.invoices WHERE id = 2"), ins, 2, s)
		}},
		{name: "rollback_statement_then_cached_insert", ddl: ddl, yaml: advBillingMap, run: func(a *adv) {
			// The same as a rolled-back transaction, with the statements as text.
			a.try("BEGIN")
			a.try("SET search_path = {ns}_billing")
			a.try("ROLLBACK")
			a.exec(ins, 1, "plain-first@example.com")
			if a.try("SET search_path = {ns}_billing") != nil {
				return
			}
			s := sec("rollback-text")
			a.write(inv, []string{s}, a.reads(s, "SELECT email FROM {ns}_billing.invoices WHERE id = 2"), ins, 2, s)
		}},
		{name: "set_config_inside_dml_then_cached_insert", ddl: ddl, yaml: advBillingMap, run: func(a *adv) {
			a.exec(ins, 1, "plain-first@example.com")
			a.rawExec("CREATE TABLE knobs (v text)")
			a.rawExec("INSERT INTO knobs VALUES ('x')")
			if a.try("UPDATE knobs SET v = set_config('search_path', '{ns}_billing', false)") != nil {
				return
			}
			s := sec("sc-dml")
			a.write(inv, []string{s}, a.reads(s, "SELECT email FROM {ns}_billing.invoices WHERE id = 2"), ins, 2, s)
		}},
		{name: "set_config_in_subquery_then_cached_insert", ddl: ddl, yaml: advBillingMap, run: func(a *adv) {
			a.exec(ins, 1, "plain-first@example.com")
			if _, err := a.query("SELECT * FROM (SELECT pg_catalog.set_config('search_path', '{ns}_billing', false)) s"); err != nil {
				a.t.Logf("refused: %v", err)
				return
			}
			s := sec("sc-sub")
			a.write(inv, []string{s}, a.reads(s, "SELECT email FROM {ns}_billing.invoices WHERE id = 2"), ins, 2, s)
		}},
		{name: "temp_table_on_one_connection_plan_reused_by_another", ddl: advBilling, yaml: advBillingMap, run: func(a *adv) {
			// Both connections have the same search_path text; only the
			// first has a temporary invoices, which shadows the mapped one.
			other := a.useTwo(a.openWith("search_path", a.ns+"_billing"))
			a.try("CREATE TEMP TABLE invoices (id bigint PRIMARY KEY, email text, encrypted_kms_key text)")
			a.exec(ins, 1, "plain-temp@example.com") // the temporary table
			other()
			s := sec("temp-shared")
			a.write(inv, []string{s}, a.reads(s, "SELECT email FROM {ns}_billing.invoices WHERE id = 2"), ins, 2, s)
		}},
		{name: "temp_table_on_one_connection_select_reused_by_another", ddl: advBilling, yaml: advBillingMap, run: func(a *adv) {
			other := a.useTwo(a.openWith("search_path", a.ns+"_billing"))
			a.exec("INSERT INTO {ns}_billing.invoices (id, email) VALUES (1, $1)", sec("temp-sel"))
			a.try("CREATE TEMP TABLE invoices (id bigint PRIMARY KEY, email text, encrypted_kms_key text)")
			a.try("INSERT INTO invoices (id, email) VALUES (1, 'plain-temp@example.com')")
			a.readExact("plain-temp@example.com", "SELECT email FROM invoices WHERE id = 1")
			other()
			a.readSafe([]int{0}, []string{sec("temp-sel")}, "SELECT email FROM invoices WHERE id = 1")
		}},
		{name: "set_role_changes_dollar_user_schema", ddl: `
CREATE ROLE {ns}_r;
CREATE SCHEMA {ns}_r AUTHORIZATION {ns}_r;
CREATE TABLE {ns}_r.invoices (id bigint PRIMARY KEY, email text, encrypted_kms_key text);
ALTER TABLE {ns}_r.invoices OWNER TO {ns}_r;
CREATE TABLE invoices (id bigint PRIMARY KEY, email text, encrypted_kms_key text);
GRANT USAGE ON SCHEMA {ns} TO {ns}_r;
GRANT ALL ON invoices TO {ns}_r;`, yaml: "key_id: insecure-test-key\ntables:\n  {ns}_r.invoices:\n    columns:\n      email: {}\n", run: func(a *adv) {
			// search_path "$user", {ns}: the same text names {ns}.invoices
			// (plain) for the login role and {ns}_r.invoices (mapped) after
			// SET ROLE, as in multi-tenant setups with a schema per role.
			a.t.Cleanup(func() {
				a.raw.Exec(context.Background(), a.x("DROP OWNED BY {ns}_r CASCADE"))
				a.raw.Exec(context.Background(), a.x("DROP ROLE {ns}_r"))
			})
			a.use(a.openWith("search_path", `"$user",`+a.ns))
			a.exec(ins, 1, "plain-login-role@example.com")
			if a.try("SET ROLE {ns}_r") != nil {
				return
			}
			s := sec("set-role")
			a.write([]string{"{ns}_r.invoices"}, []string{s}, a.reads(s, "SELECT email FROM {ns}_r.invoices WHERE id = 2"), ins, 2, s)
		}},
		{name: "discard_all_then_insert", ddl: ddl, yaml: advBillingMap, run: func(a *adv) {
			a.use(a.openWith("search_path", a.ns+"_billing"))
			a.try("SET search_path = {ns}")
			a.exec(ins, 1, "plain-first@example.com")
			if a.try("DISCARD ALL") != nil {
				return
			}
			s := sec("discard")
			a.write(inv, []string{s}, a.reads(s, "SELECT email FROM {ns}_billing.invoices WHERE id = 2"), ins, 2, s)
		}},
	}
	runAdversarial(t, cases)
}

// ---------------------------------------------------------------------------
// Identifiers: the server truncates names to 63 bytes; keywords; case.

func TestAttackIdentifiers(t *testing.T) {
	t63 := "users_" + strings.Repeat("x", 57) // 63 bytes: the whole name
	c63 := "email_" + strings.Repeat("y", 57)
	cases := []advCase{
		{name: "long_table_name_written_longer", ddl: `CREATE TABLE ` + t63 + ` (id bigint PRIMARY KEY, email text, encrypted_kms_key text);`,
			yaml: "key_id: insecure-test-key\ntables:\n  " + t63 + ":\n    columns:\n      email: {}\n", run: func(a *adv) {
				s := sec("long-table")
				a.write([]string{t63}, []string{s}, a.reads(s, "SELECT email FROM "+t63+" WHERE id = 1"),
					"INSERT INTO "+t63+"_and_more (id, email) VALUES (1, $1)", s)
				a.exec("INSERT INTO "+t63+" (id, email) VALUES (2, $1)", sec("long-table-2"))
				a.readSafe([]int{0}, []string{s, sec("long-table-2")}, "SELECT email FROM "+t63+"_and_more")
			}},
		{name: "map_entry_longer_than_63_bytes", ddl: `CREATE TABLE ` + t63 + `_and_more (id bigint PRIMARY KEY, email text, encrypted_kms_key text);`,
			yaml: "key_id: insecure-test-key\ntables:\n  " + t63 + "_and_more:\n    columns:\n      email: {}\n", run: func(a *adv) {
				s := sec("long-map")
				a.write([]string{t63}, []string{s}, a.reads(s, "SELECT email FROM "+t63+" WHERE id = 1"),
					"INSERT INTO "+t63+" (id, email) VALUES (1, $1)", s)
				s2 := sec("long-map-2")
				a.write([]string{t63}, []string{s2}, a.reads(s2, "SELECT email FROM "+t63+" WHERE id = 2"),
					"INSERT INTO "+t63+"_and_more (id, email) VALUES (2, $1)", s2)
			}},
		{name: "long_column_name_written_longer", ddl: `CREATE TABLE users (id bigint PRIMARY KEY, ` + c63 + ` text, encrypted_kms_key text);`,
			yaml: "key_id: insecure-test-key\ntables:\n  users:\n    columns:\n      " + c63 + ": {}\n", run: func(a *adv) {
				s := sec("long-col")
				a.write([]string{"users"}, []string{s}, a.reads(s, "SELECT "+c63+" FROM users WHERE id = 1"),
					"INSERT INTO users (id, "+c63+"_zz) VALUES (1, $1)", s)
				a.exec("INSERT INTO users (id, "+c63+") VALUES (2, $1)", sec("long-col-2"))
				s3 := sec("long-col-3")
				a.write([]string{"users"}, []string{s3}, a.reads(s3, "SELECT "+c63+" FROM users WHERE id = 2"),
					"UPDATE users SET "+c63+"_zz = $1 WHERE id = 2", s3)
				a.readSafe([]int{0}, []string{s, sec("long-col-2"), s3}, "SELECT "+c63+"_zz FROM users")
			}},
		{name: "keyword_table_name", ddl: `CREATE TABLE "order" (id bigint PRIMARY KEY, email text, encrypted_kms_key text);`,
			yaml: "key_id: insecure-test-key\ntables:\n  order:\n    columns:\n      email: {}\n", run: func(a *adv) {
				s := sec("kw")
				a.write([]string{`"order"`}, []string{s}, a.reads(s, `SELECT email FROM "order" WHERE id = 1`),
					`INSERT INTO "order" (id, email) VALUES (1, $1)`, s)
				a.readSafe([]int{0}, []string{s}, `SELECT o.email FROM "order" o`)
				a.readSafe([]int{1}, []string{s}, `SELECT * FROM "order"`)
				s2 := sec("kw2")
				a.write([]string{`"order"`}, []string{s2}, a.reads(s2, `SELECT email FROM "order" WHERE id = 1`),
					`UPDATE "order" SET email = $1 WHERE id = 1`, s2)
			}},
		{name: "capitalised_mapped_column", ddl: `CREATE TABLE users (id bigint PRIMARY KEY, "Email" text, encrypted_kms_key text);`,
			yaml: "key_id: insecure-test-key\ntables:\n  users:\n    columns:\n      Email: {}\n", run: func(a *adv) {
				s := sec("capcol")
				a.write([]string{"users"}, []string{s}, a.reads(s, `SELECT "Email" FROM users WHERE id = 1`),
					`INSERT INTO users (id, "Email") VALUES (1, $1)`, s)
				a.readSafe([]int{0}, []string{s}, `SELECT "Email" FROM users`)
				a.readSafe([]int{0}, []string{s}, `SELECT U&"\0045mail" FROM users`)
			}},
	}
	runAdversarial(t, cases)
}

// ---------------------------------------------------------------------------
// Reads: ways to carry an encrypted column out of a query.

func TestAttackReads(t *testing.T) {
	contacts := advUsers + `CREATE TABLE contacts (id bigint, email text);`
	cases := []advCase{
		{name: "cte_named_like_plain_table", ddl: advUsers, run: func(a *adv) {
			sa, sb := attackSeed(a)
			ok := []string{sa, sb}
			a.readSafe([]int{0}, ok, "WITH orgs AS (SELECT id, email AS name FROM users) SELECT name FROM orgs")
			a.readSafe([]int{0}, ok, "WITH orgs AS (SELECT id, email AS name FROM users) SELECT o.name FROM orgs o")
			a.readSafe([]int{1}, ok, "WITH orgs AS (SELECT id, email AS name FROM users) SELECT * FROM orgs")
			a.readSafe([]int{0}, ok, "WITH orgs AS (SELECT id, email AS name FROM users) SELECT (SELECT name FROM orgs WHERE orgs.id = 1)")
			a.readSafe([]int{0}, ok, "WITH orgs AS (SELECT id, email AS name FROM users) SELECT x.name FROM (SELECT * FROM orgs) x")
		}},
		{name: "cte_named_like_mapped_table", ddl: advUsers, run: func(a *adv) {
			sa, sb := attackSeed(a)
			ok := []string{sa, sb, "not-secret"}
			a.readSafe([]int{0}, ok, "WITH users AS (SELECT 1::bigint AS id, 'not-secret'::text AS email) SELECT email FROM users")
			a.readSafe([]int{0}, ok, "WITH x AS (SELECT email FROM users) SELECT * FROM (WITH users AS (SELECT 1 AS id) SELECT x.email FROM x, users) s")
			a.readSafe([]int{0}, ok, "WITH u AS (SELECT email FROM users), users AS (SELECT email FROM u) SELECT email FROM users")
		}},
		{name: "recursive_cte", ddl: advUsers, run: func(a *adv) {
			sa, sb := attackSeed(a)
			a.readSafe([]int{0}, []string{sa, sb}, "WITH RECURSIVE r(e, n) AS (SELECT email, 1 FROM users UNION ALL SELECT e, n + 1 FROM r WHERE n < 2) SELECT e FROM r")
		}},
		{name: "from_alias_column_list_swap", ddl: advUsers, run: func(a *adv) {
			sa, sb := attackSeed(a)
			ok := []string{sa, sb}
			// In u(id, org_id, email, name), "name" is the stored email.
			a.readSafe([]int{0}, ok, "SELECT name FROM users AS u(id, org_id, email, name) ORDER BY id")
			a.readSafe([]int{0}, ok, "SELECT u.d FROM users AS u(a, b, c, d)")
			a.readSafe([]int{3}, ok, "SELECT * FROM users AS u(a, b, c, d)")
			a.readSafe([]int{0}, ok, "SELECT s.name FROM (SELECT email, name FROM users) AS s(name, email)")
			a.readSafe([]int{0}, ok, "WITH c(name, email) AS (SELECT email, name FROM users) SELECT name FROM c")
			a.readSafe([]int{0}, ok, "SELECT j.e FROM (users u JOIN orgs o ON o.id = u.org_id) AS j(i, oi, n, e)")
		}},
		{name: "natural_joins", ddl: contacts, run: func(a *adv) {
			sa, sb := attackSeed(a)
			a.rawExec("INSERT INTO contacts VALUES (1, 'c1@example.com'), (3, 'c3@example.com')")
			ok := []string{sa, sb, "c1@example.com", "c3@example.com"}
			a.readSafe([]int{1}, ok, "SELECT * FROM users NATURAL FULL JOIN contacts")
			a.readSafe([]int{0}, ok, "SELECT email FROM users NATURAL LEFT JOIN contacts")
			a.readSafe([]int{0}, ok, "SELECT email FROM users NATURAL FULL JOIN contacts")
			a.readSafe([]int{0}, ok, "SELECT email FROM users FULL JOIN contacts USING (email)")
			a.readSafe([]int{3}, ok, "SELECT * FROM users NATURAL JOIN orgs")
		}},
		{name: "row_array_and_field_constructs", ddl: advUsers, run: func(a *adv) {
			sa, sb := attackSeed(a)
			ok := []string{sa, sb}
			a.readSafe([]int{0}, ok, "SELECT ARRAY[email] FROM users")
			a.readSafe([]int{0}, ok, "SELECT ARRAY[email, name] FROM users")
			a.readSafe([]int{0}, ok, "SELECT ROW(email, name) FROM users")
			a.readSafe([]int{0}, ok, "SELECT (email, id) FROM users")
			a.readSafe([]int{0}, ok, "SELECT (u).email FROM users u")
			a.readSafe([]int{0}, ok, "SELECT (u.*).email FROM users u")
			a.readSafe([]int{0}, ok, "SELECT (x).email FROM (SELECT u FROM users u) s(x)")
			a.readSafe([]int{0}, ok, "SELECT (ROW(email, name)).f1 FROM users")
			a.readSafe([]int{0}, ok, "SELECT email COLLATE \"C\" FROM users")
			a.readSafe([]int{0}, ok, "SELECT (email) FROM users")
			a.readSafe([]int{0}, ok, "SELECT users FROM users")
			a.readSafe([]int{0}, ok, "SELECT email IS DISTINCT FROM NULL FROM users")
		}},
		{name: "windows_and_filters", ddl: advUsers, run: func(a *adv) {
			sa, sb := attackSeed(a)
			ok := []string{sa, sb}
			a.readSafe([]int{0}, ok, "SELECT first_value(email) OVER (ORDER BY id) FROM users")
			a.readSafe([]int{0}, ok, "SELECT lag(email) OVER (ORDER BY id) FROM users")
			a.readSafe([]int{0}, ok, "SELECT nth_value(email, 1) OVER w FROM users WINDOW w AS (ORDER BY id)")
			a.readExact("2", "SELECT count(*) FILTER (WHERE email IS NOT NULL) FROM users")
			a.readSafe(nil, ok, "SELECT count(*) FILTER (WHERE email = $1) FROM users", sa)
			a.readSafe([]int{1}, ok, "SELECT id, email FROM users GROUP BY id ORDER BY id")
			a.readSafe([]int{0}, ok, "SELECT DISTINCT ON (id) email FROM users ORDER BY id")
		}},
		{name: "values_and_table_functions", ddl: advUsers, run: func(a *adv) {
			sa, sb := attackSeed(a)
			ok := []string{sa, sb}
			a.readSafe([]int{0}, ok, "VALUES ((SELECT email FROM users WHERE id = 1))")
			a.readSafe([]int{0}, ok, "SELECT * FROM (VALUES ((SELECT email FROM users WHERE id = 1))) v(x)")
			a.readSafe([]int{0}, ok, "SELECT v.x FROM users u, LATERAL (VALUES (u.email)) v(x)")
			a.readSafe([]int{0}, ok, "SELECT x FROM users u, ROWS FROM (unnest(ARRAY[u.email])) x")
			a.readSafe([]int{0}, ok, "SELECT x FROM users u, unnest(ARRAY[u.email]) WITH ORDINALITY AS t(x, o)")
			a.readSafe([]int{0}, ok, "SELECT unnest(ARRAY[email]) FROM users")
			a.readSafe([]int{0}, ok, "SELECT x FROM unnest(ARRAY(SELECT email FROM users)) x")
			a.readSafe([]int{3, 4}, ok, "SELECT * FROM users u, LATERAL (SELECT u.email) s")
			a.readSafe([]int{0}, ok, "SELECT json_build_array(email) FROM users")
			a.readSafe([]int{0}, ok, "SELECT to_json(email) FROM users")
			a.readSafe([]int{0}, ok, "SELECT jsonb_agg(email) FROM users")
			a.readSafe([]int{0}, ok, "SELECT json_object_agg(id, email) FROM users")
			a.readSafe([]int{0}, ok, "SELECT name FROM orgs UNION ALL SELECT email FROM users")
			a.readSafe([]int{0}, ok, "SELECT email FROM users UNION ALL SELECT name FROM orgs")
		}},
		{name: "table_clauses", ddl: advInh, run: func(a *adv) {
			sa := sec("tc")
			if !a.seedOK(1, 10, "a", sa) {
				return
			}
			ok := []string{sa}
			a.readSafe([]int{0}, ok, "SELECT email FROM users TABLESAMPLE SYSTEM (100)")
			a.readSafe([]int{0}, ok, "SELECT email FROM users TABLESAMPLE BERNOULLI (100) REPEATABLE (1)")
			a.readSafe([]int{0}, ok, "SELECT email FROM users u FOR UPDATE OF u")
			a.readSafe([]int{0}, ok, "SELECT email FROM ONLY users")
			a.readSafe([]int{0}, ok, "SELECT email FROM users*")
			a.readSafe([]int{0}, ok, "SELECT email FROM users FOR SHARE SKIP LOCKED")
		}},
		{name: "returning_on_plain_tables", ddl: advUsers, run: func(a *adv) {
			sa, sb := attackSeed(a)
			ok := []string{sa, sb}
			a.readSafe([]int{0}, ok, "DELETE FROM orgs WHERE id = 99 RETURNING (SELECT email FROM users WHERE id = 1)")
			a.readSafe([]int{0}, ok, "UPDATE orgs SET name = 'x' WHERE id = 10 RETURNING ARRAY(SELECT email FROM users)")
			a.readSafe([]int{0}, ok, "INSERT INTO orgs (id, name) VALUES (31, 'z') RETURNING (SELECT u FROM users u WHERE id = 1)")
			a.readSafe([]int{0}, ok, "INSERT INTO users (id, name, email) VALUES (3, 'c', NULL) RETURNING (SELECT email FROM users WHERE id = 1)")
			a.readSafe([]int{0}, ok, "UPDATE users SET name = 'n' WHERE id = 1 RETURNING users")
		}},
		{name: "delete_returning_star_partitioned", ddl: advPart, run: func(a *adv) {
			sa, sb := sec("dp-a"), sec("dp-b")
			if !a.seedOK(1, 10, "a", sa, 150, 10, "b", sb) {
				return
			}
			a.readSafe([]int{3}, []string{sa, sb}, "DELETE FROM users WHERE id = 150 RETURNING *")
			a.readSafe([]int{0, 1}, []string{sa, sb}, "DELETE FROM users WHERE id = 1 RETURNING email, (SELECT email FROM users_p2 LIMIT 1)")
		}},
	}
	runAdversarial(t, cases)
}

// ---------------------------------------------------------------------------
// Copying a cell or a wrapped key into a plain column: it then reads back
// through the driver as if it were plaintext.

func TestAttackCopyCells(t *testing.T) {
	cases := []advCase{
		{name: "update_plain_column_from_encrypted_same_row", ddl: advUsers, run: func(a *adv) {
			sa, sb := attackSeed(a)
			a.try("UPDATE users SET name = email WHERE id = 1")
			a.plainNoCells("users", "name")
			a.readSafe([]int{0, 1}, []string{sa, sb, "alice", "bob"}, "SELECT name, email FROM users ORDER BY id")
		}},
		{name: "update_plain_table_from_join", ddl: advUsers, run: func(a *adv) {
			attackSeed(a)
			a.try("UPDATE orgs o SET name = u.email FROM users u WHERE u.org_id = o.id")
			a.plainNoCells("orgs", "name")
			a.readSafe(nil, nil, "SELECT name FROM orgs")
		}},
		{name: "update_plain_table_from_scalar_subquery", ddl: advUsers, run: func(a *adv) {
			attackSeed(a)
			a.try("UPDATE orgs SET name = (SELECT email FROM users WHERE users.org_id = orgs.id)")
			a.plainNoCells("orgs", "name")
			a.readSafe(nil, nil, "SELECT name FROM orgs")
		}},
		{name: "insert_plain_values_subquery", ddl: advUsers, run: func(a *adv) {
			attackSeed(a)
			a.try("INSERT INTO orgs (id, name) VALUES (7, (SELECT email FROM users WHERE id = 1))")
			a.try("WITH x AS (SELECT id, email FROM users) INSERT INTO orgs (id, name) SELECT id + 100, email FROM x")
			a.plainNoCells("orgs", "name")
			a.readSafe(nil, nil, "SELECT name FROM orgs")
		}},
		{name: "on_conflict_plain_column_from_stored", ddl: advUsers, run: func(a *adv) {
			sa, sb := attackSeed(a)
			a.try("INSERT INTO users (id, name) VALUES (1, 'n') ON CONFLICT (id) DO UPDATE SET name = users.email")
			a.try("INSERT INTO users (id, name, email) VALUES (2, 'n', $1) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.email", sec("exc"))
			a.plainNoCells("users", "name")
			a.readSafe([]int{0, 1}, []string{sa, sb, sec("exc"), "alice", "bob", "n"}, "SELECT name, email FROM users ORDER BY id")
		}},
		{name: "insert_plain_column_of_mapped_from_subquery", ddl: advUsers, run: func(a *adv) {
			sa, sb := attackSeed(a)
			a.try("INSERT INTO users (id, name) VALUES (3, (SELECT email FROM users WHERE id = 1))")
			a.try("UPDATE users SET (name) = (SELECT email FROM users u2 WHERE u2.id = 2) WHERE id = 1")
			a.plainNoCells("users", "name")
			a.readSafe([]int{0, 1}, []string{sa, sb, "alice", "bob"}, "SELECT name, email FROM users ORDER BY id")
		}},
	}
	runAdversarial(t, cases)
}

// ---------------------------------------------------------------------------
// Writes: literal shapes, casts that change the stored cell, statement
// wrappers.

func TestAttackWrites(t *testing.T) {
	users := []string{"users"}
	cases := []advCase{
		{name: "literal_shapes", ddl: advUsers, run: func(a *adv) {
			a.write(users, []string{"secret-adj", "acent@example.com"}, a.reads("secret-adjacent@example.com", "SELECT email FROM users WHERE id = 1"),
				"INSERT INTO users (id, email) VALUES (1, 'secret-adj'\n'acent@example.com')")
			a.write(users, []string{"secret-dollar"}, a.reads("secret-dollar@x", "SELECT email FROM users WHERE id = 2"),
				"INSERT INTO users (id, email) VALUES (2, $q$secret-dollar@x$q$)")
			a.write(users, []string{"secret-esc"}, a.reads("secret-escA", "SELECT email FROM users WHERE id = 3"),
				`INSERT INTO users (id, email) VALUES (3, E'secret-esc\x41')`)
			a.write(users, []string{"secret-uni"}, a.reads("secret-uniA", "SELECT email FROM users WHERE id = 4"),
				`INSERT INTO users (id, email) VALUES (4, U&'secret-uni\0041')`)
			a.write(users, []string{"secret-coll"}, a.reads("secret-coll", "SELECT email FROM users WHERE id = 5"),
				`INSERT INTO users (id, email) VALUES (5, 'secret-coll' COLLATE "C")`)
			a.write(users, []string{"secret-paren"}, a.reads("secret-paren", "SELECT email FROM users WHERE id = 6"),
				`INSERT INTO users (id, email) VALUES (6, (('secret-paren')))`)
			a.write(users, []string{"secret-sub"}, a.reads("secret-sub", "SELECT email FROM users WHERE id = 7"),
				`INSERT INTO users (id, email) VALUES (7, (SELECT $1::text))`, "secret-sub")
		}},
		{name: "truncating_casts_on_insert", ddl: advUsers, run: func(a *adv) {
			s := sec("trunc-param")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 1"),
				"INSERT INTO users (id, email) VALUES (1, $1::varchar(8))", s)
			s2 := sec("trunc-cast")
			a.write(users, []string{s2}, a.reads(s2, "SELECT email FROM users WHERE id = 2"),
				"INSERT INTO users (id, email) VALUES (2, CAST($1 AS char(10)))", s2)
			s3 := sec("trunc-lit")
			a.write(users, []string{s3}, a.reads(s3, "SELECT email FROM users WHERE id = 3"),
				"INSERT INTO users (id, email) VALUES (3, '"+s3+"'::varchar(5))")
			s4 := sec("trunc-bpchar")
			a.write(users, []string{s4}, a.reads(s4, "SELECT email FROM users WHERE id = 4"),
				"INSERT INTO users (id, email) VALUES (4, $1::\"char\")", s4)
		}},
		{name: "truncating_casts_on_update", ddl: advUsers, run: func(a *adv) {
			a.seedUsers(1, 10, "a", sec("tu-seed"))
			s := sec("tu")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 1"),
				"UPDATE users SET email = $1::varchar(6) WHERE id = 1", s)
			s2 := sec("tu-row")
			a.write(users, []string{s2}, a.reads(s2, "SELECT email FROM users WHERE id = 1"),
				"UPDATE users SET (email, name) = ROW($1::varchar(6), 'n') WHERE id = 1", s2)
		}},
		{name: "truncating_cast_on_conflict", ddl: advUsers, run: func(a *adv) {
			a.seedUsers(1, 10, "a", sec("tc-seed"))
			s := sec("tc-upsert")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 1"),
				"INSERT INTO users (id, email) VALUES (1, $1::varchar(7)) ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email", s)
		}},
		{name: "multirow_values_mixing_null_default", ddl: advUsers, run: func(a *adv) {
			s := sec("mr")
			a.write(users, []string{s}, a.reads("NULL|"+s+"|NULL", "SELECT email FROM users ORDER BY id"),
				"INSERT INTO users (id, email) VALUES (1, NULL), (2, $1), (3, DEFAULT)", s)
		}},
		{name: "update_row_forms", ddl: advUsers, run: func(a *adv) {
			a.seedUsers(1, 10, "a", sec("rf-seed"))
			s := sec("rf")
			a.write(users, []string{s}, a.reads(s+",n", "SELECT email, name FROM users WHERE id = 1"),
				"UPDATE users SET (email, name) = ROW($1, 'n') WHERE id = 1", s)
			s2 := sec("rf2")
			a.write(users, []string{s2}, a.reads(s2, "SELECT email FROM users WHERE id = 1"),
				"UPDATE users SET (email) = ROW($1) WHERE id = 1", s2)
			a.write(users, nil, a.reads("NULL", "SELECT email FROM users WHERE id = 1"),
				"UPDATE users SET email = DEFAULT WHERE id = 1")
			s3 := sec("rf3")
			a.write(users, []string{s3}, a.reads(s3, "SELECT email FROM users WHERE id = 1"),
				"UPDATE users* SET email = $1 WHERE id = 1", s3)
		}},
		{name: "on_conflict_on_constraint_with_where", ddl: advUsers, run: func(a *adv) {
			a.seedUsers(1, 10, "a", sec("occ-seed"))
			s := sec("occ")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 1"),
				"INSERT INTO users AS x (id, email) VALUES (1, $1) ON CONFLICT ON CONSTRAINT users_pkey DO UPDATE SET email = EXCLUDED.email WHERE x.name = 'a'", s)
			s2 := sec("occ2")
			a.write(users, []string{s2}, nil,
				"INSERT INTO users AS x (id, email) VALUES (1, $1) ON CONFLICT (id) WHERE x.name = 'zz' DO UPDATE SET email = EXCLUDED.email WHERE x.name = 'zz'", s2)
		}},
		{name: "copy_with_dml_query", ddl: advUsers, run: func(a *adv) {
			s := sec("copy-dml")
			a.write(users, []string{s}, nil, "COPY (INSERT INTO users (id, email) VALUES (1, '"+s+"') RETURNING id) TO STDOUT")
			s2 := sec("copy-upd")
			a.rawExec("INSERT INTO users (id) VALUES (2)")
			a.write(users, []string{s2}, nil, "COPY (UPDATE users SET email = '"+s2+"' WHERE id = 2 RETURNING id) TO STDOUT")
			a.readSafe(nil, nil, "COPY (SELECT email FROM users) TO STDOUT")
		}},
		{name: "explain_analyse_spellings", ddl: advUsers, run: func(a *adv) {
			for i, q := range []string{
				"EXPLAIN (ANALYSE) INSERT INTO users (id, email) VALUES (%d, '%s')",
				"EXPLAIN (ANALYZE TRUE, FORMAT JSON) INSERT INTO users (id, email) VALUES (%d, '%s')",
				"EXPLAIN ANALYSE VERBOSE INSERT INTO users (id, email) VALUES (%d, '%s')",
				"EXPLAIN (ANALYZE 1) INSERT INTO users (id, email) VALUES (%d, '%s')",
				"EXPLAIN (analyze on, costs off) INSERT INTO users (id, email) VALUES (%d, '%s')",
			} {
				s := sec("explain" + string(rune('a'+i)))
				q = strings.Replace(strings.Replace(q, "%d", string(rune('1'+i)), 1), "%s", s, 1)
				a.write(users, []string{s}, nil, q)
			}
		}},
		{name: "cte_named_like_the_target", ddl: advUsers, run: func(a *adv) {
			// A CTE never names the target of INSERT, UPDATE or DELETE.
			s := sec("cte-target")
			a.write(users, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 1"),
				"WITH users AS (SELECT 1 AS id) INSERT INTO users (id, email) VALUES (1, $1)", s)
			a.exec("INSERT INTO users (id, email) VALUES (2, $1)", sec("cte-seed"))
			s2 := sec("cte-upd")
			a.write(users, []string{s2}, a.reads(s2, "SELECT email FROM users WHERE id = 2"),
				"WITH users AS (SELECT 2 AS id) UPDATE users SET email = $1 WHERE id = 2", s2)
			a.readSafe([]int{0}, []string{s, s2, sec("cte-seed")}, "WITH users AS (SELECT 1 AS id) DELETE FROM {ns}.users WHERE id = 1 RETURNING email")
			a.readSafe([]int{0}, []string{s, s2, sec("cte-seed")}, "WITH users AS (SELECT 1 AS id) SELECT email FROM {ns}.users")
			a.readSafe([]int{0}, []string{s, s2, sec("cte-seed")}, "WITH users AS (SELECT 1 AS id) DELETE FROM users RETURNING email")
			s3 := sec("cte-upsert")
			a.write(users, []string{s3}, a.reads(s3, "SELECT email FROM users WHERE id = 3"),
				"WITH users AS (SELECT 1 AS id) INSERT INTO users (id, email) VALUES (3, $1) ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email", s3)
			s4 := sec("cte-nested")
			a.write(users, []string{s4}, a.reads(s4, "SELECT email FROM users WHERE id = 4"),
				"WITH x AS (SELECT 1), users AS (SELECT * FROM x) INSERT INTO users (id, email) VALUES (4, $1)", s4)
		}},
		{name: "savepoint_around_refusal", ddl: advUsers, run: func(a *adv) {
			a.seedUsers(1, 10, "a", sec("sp-seed"))
			tx, err := a.begin()
			if err != nil {
				a.t.Fatal(err)
			}
			tx.Exec("SAVEPOINT s")
			if _, err := tx.Exec("SELECT id FROM users WHERE email = 'x'"); err == nil {
				a.t.Errorf("a comparison on an encrypted column was not refused")
			}
			tx.Exec("ROLLBACK TO SAVEPOINT s")
			s := sec("sp-after")
			if _, err := tx.Exec("UPDATE users SET email = $1 WHERE id = 1", s); err != nil {
				a.t.Errorf("the transaction is not usable after a refusal: %v", err)
			}
			if err := tx.Commit(); err != nil {
				a.t.Errorf("commit: %v", err)
			}
			a.noPlaintext([]string{"users"}, []string{s})
			a.mustRead(s, "SELECT email FROM users WHERE id = 1")
		}},
	}
	runAdversarial(t, cases)
}

// ---------------------------------------------------------------------------
// Migrations from a second connection: a plain table attached as a
// partition of a mapped one after the driver planned a statement on it.

func TestAttackMigrations(t *testing.T) {
	ddl := advPart + `CREATE TABLE users_p3 (id bigint NOT NULL, org_id bigint, name text, email text, encrypted_kms_key text);`
	cases := []advCase{
		{name: "attach_partition_same_insert_text", sameText: true, ddl: ddl, run: func(a *adv) {
			const q = "INSERT INTO users_p3 (id, email) VALUES ($1, $2)"
			a.exec(q, 250, nil) // planned while users_p3 is a plain table
			a.migrate("ALTER TABLE users ATTACH PARTITION users_p3 FOR VALUES FROM (200) TO (300)")
			s := sec("attach")
			a.write([]string{"users"}, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 251"), q, 251, s)
		}},
		{name: "attach_partition_prepared", sameText: true, ddl: ddl, run: func(a *adv) {
			st, err := a.c.PrepareContext(a.ctx, "INSERT INTO users_p3 (id, email) VALUES ($1, $2)")
			if err != nil {
				a.t.Fatal(err)
			}
			defer st.Close()
			if _, err := st.ExecContext(a.ctx, 250, nil); err != nil {
				a.t.Fatal(err)
			}
			a.migrate("ALTER TABLE users ATTACH PARTITION users_p3 FOR VALUES FROM (200) TO (300)")
			s := sec("attach-prep")
			a.writeFn([]string{"users"}, []string{s}, a.reads(s, "SELECT email FROM users WHERE id = 251"), "prepared insert after attach", func() error {
				_, err := st.ExecContext(a.ctx, 251, s)
				return err
			})
		}},
		{name: "drop_shadowing_plain_table_same_insert_text", sameText: true, ddl: advBilling + `CREATE TABLE invoices (id bigint PRIMARY KEY, email text, encrypted_kms_key text);`, yaml: advBillingMap, run: func(a *adv) {
			// search_path {ns}, {ns}_billing: invoices is the plain table
			// until a migration drops it; then the same text names the
			// mapped one. No relation the driver watches changes.
			a.use(a.openWith("search_path", a.ns+","+a.ns+"_billing"))
			const q = "INSERT INTO invoices (id, email) VALUES ($1, $2)"
			a.exec(q, 1, "plain-legacy@example.com")
			a.migrate("DROP TABLE {ns}.invoices")
			s := sec("shadow-dropped")
			a.write([]string{"{ns}_billing.invoices"}, []string{s}, a.reads(s, "SELECT email FROM {ns}_billing.invoices WHERE id = 2"), q, 2, s)
		}},
		{name: "drop_shadowing_plain_table_same_select_text", sameText: true, ddl: advBilling + `CREATE TABLE invoices (id bigint PRIMARY KEY, email text, encrypted_kms_key text);`, yaml: advBillingMap, run: func(a *adv) {
			a.exec("INSERT INTO {ns}_billing.invoices (id, email) VALUES (1, $1)", sec("shadow-sel"))
			a.rawExec("INSERT INTO invoices (id, email) VALUES (1, 'plain-legacy@example.com')")
			a.use(a.openWith("search_path", a.ns+","+a.ns+"_billing"))
			const q = "SELECT email FROM invoices WHERE id = 1"
			a.readExact("plain-legacy@example.com", q)
			a.migrate("ALTER TABLE {ns}.invoices RENAME TO invoices_legacy")
			a.readSafe([]int{0}, []string{sec("shadow-sel")}, q)
		}},
		{name: "create_shadowing_plain_table_same_insert_text", sameText: true, ddl: advBilling, yaml: advBillingMap, run: func(a *adv) {
			// The reverse: invoices is the mapped table until a migration
			// creates a plain invoices earlier in the search_path. A write
			// must not leave a cell in the plain table, where it reads back
			// as if it were the value.
			a.use(a.openWith("search_path", a.ns+","+a.ns+"_billing"))
			const q = "INSERT INTO invoices (id, email) VALUES ($1, $2)"
			a.exec(q, 1, sec("shadow-created-1"))
			a.migrate("CREATE TABLE {ns}.invoices (id bigint PRIMARY KEY, email text, encrypted_kms_key text)")
			s := sec("shadow-created-2")
			err := a.write([]string{"{ns}_billing.invoices", "plain:{ns}.invoices"}, nil, nil, q, 2, s)
			a.t.Logf("after the write (err %v):\n%s", err, a.snap("{ns}_billing.invoices", "{ns}.invoices"))
			if err == nil {
				a.readSafe([]int{0}, []string{s}, "SELECT email FROM {ns}.invoices WHERE id = 2")
				a.readSafe([]int{0}, []string{s}, "SELECT email FROM invoices WHERE id = 2")
			}
		}},
	}
	runAdversarial(t, cases)
}
