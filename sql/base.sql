-- sql/base.sql - the app-side base schema sluice needs to run standalone.
--
-- Accounts, their members, projects, interviews (the interview pipeline's
-- subject), insights and personas, with Row Level Security keyed on
-- auth.uid(). Every statement is idempotent, so `sluice migrate` (which
-- embeds this file) may apply it again at any time. It needs no superuser:
-- it runs on plain PostgreSQL 15 and on Supabase. See docs/schema.md.

-- auth.uid(): Supabase provides it. Elsewhere we create the same function
-- (it reads the JWT subject that PostgREST, or a test, puts in the session
-- settings), but only where no `auth` schema exists, or where the `auth`
-- schema is our own shim from an earlier run.
DO $$
DECLARE
  ns oid := (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'auth');
BEGIN
  IF ns IS NULL
     OR pg_catalog.obj_description(ns, 'pg_namespace') = 'sluice: auth.uid() shim' THEN
    CREATE SCHEMA IF NOT EXISTS auth;
    COMMENT ON SCHEMA auth IS 'sluice: auth.uid() shim';
    CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
      LANGUAGE sql STABLE
    AS $fn$
      SELECT coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
      )::uuid
    $fn$;
    GRANT USAGE ON SCHEMA auth TO PUBLIC;
    GRANT EXECUTE ON FUNCTION auth.uid() TO PUBLIC;
  END IF;
END $$;

-- The application role: what the app (or a test) uses through SET ROLE.
-- It is subject to RLS. Creating it needs CREATEROLE; without it the grants
-- below are skipped and the app keeps its own roles (Supabase: anon,
-- authenticated).
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'sluice_app') THEN
    CREATE ROLE sluice_app NOLOGIN;
  END IF;
EXCEPTION
  WHEN insufficient_privilege THEN
    RAISE NOTICE 'sluice: cannot create role sluice_app (%); grants skipped', SQLERRM;
  WHEN duplicate_object OR unique_violation THEN
    NULL; -- created by a concurrent migration in another database
END $$;

-- ---------------------------------------------------------------- tables

CREATE TABLE IF NOT EXISTS public.accounts (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
-- Who created the account: lets the creator see the new row before the
-- trigger below makes them its owner, so INSERT ... RETURNING works.
ALTER TABLE public.accounts
  ADD COLUMN IF NOT EXISTS created_by uuid DEFAULT auth.uid();

CREATE TABLE IF NOT EXISTS public.account_members (
  account_id uuid NOT NULL REFERENCES public.accounts (id) ON DELETE CASCADE,
  user_id uuid NOT NULL,
  role text NOT NULL DEFAULT 'member',
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (account_id, user_id)
);
CREATE INDEX IF NOT EXISTS account_members_user_id_idx
  ON public.account_members (user_id);

CREATE TABLE IF NOT EXISTS public.projects (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  account_id uuid NOT NULL REFERENCES public.accounts (id) ON DELETE CASCADE,
  name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS projects_account_id_idx
  ON public.projects (account_id);

DO $$
BEGIN
  IF pg_catalog.to_regtype('public.interview_status') IS NULL THEN
    CREATE TYPE public.interview_status AS ENUM
      ('uploading', 'uploaded', 'transcribed', 'processing', 'ready', 'error');
  END IF;
END $$;

CREATE TABLE IF NOT EXISTS public.interviews (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  account_id uuid NOT NULL REFERENCES public.accounts (id) ON DELETE CASCADE,
  project_id uuid REFERENCES public.projects (id) ON DELETE CASCADE,
  title text,
  status public.interview_status NOT NULL DEFAULT 'uploading',
  progress int NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
  status_detail text,
  media_path text,
  transcript text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS interviews_account_id_idx
  ON public.interviews (account_id);
CREATE INDEX IF NOT EXISTS interviews_project_id_idx
  ON public.interviews (project_id);

-- Insights and personas are written by the analysis stage with UPSERTs on
-- their natural keys, so a retried chunk never duplicates a row.
CREATE TABLE IF NOT EXISTS public.insights (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  interview_id uuid NOT NULL REFERENCES public.interviews (id) ON DELETE CASCADE,
  chunk int NOT NULL,
  seq int NOT NULL,
  kind text NOT NULL,
  content text NOT NULL,
  quote text,
  speaker text,
  confidence real,
  data jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (interview_id, chunk, seq)
);

CREATE TABLE IF NOT EXISTS public.personas (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  interview_id uuid NOT NULL REFERENCES public.interviews (id) ON DELETE CASCADE,
  name text NOT NULL,
  role text,
  description text,
  traits jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (interview_id, name)
);

-- ---------------------------------------------------------------- triggers

CREATE OR REPLACE FUNCTION public.sluice_base_set_updated_at() RETURNS trigger
  LANGUAGE plpgsql
AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER sluice_base_updated_at
  BEFORE UPDATE ON public.interviews
  FOR EACH ROW EXECUTE FUNCTION public.sluice_base_set_updated_at();

-- ---------------------------------------------------------------- RLS helpers

-- Membership tests run as their owner (SECURITY DEFINER) so that the
-- account_members policy can use them without recursing into itself.
CREATE OR REPLACE FUNCTION public.sluice_is_account_member(account uuid)
  RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
  SELECT EXISTS (SELECT 1 FROM public.account_members m
                 WHERE m.account_id = account AND m.user_id = auth.uid())
$$;

CREATE OR REPLACE FUNCTION public.sluice_is_account_owner(account uuid)
  RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
  SELECT EXISTS (SELECT 1 FROM public.account_members m
                 WHERE m.account_id = account AND m.user_id = auth.uid()
                   AND m.role = 'owner')
$$;

-- A creator who leaves (or is removed from) the account loses the
-- creator's view of it below: only members see an account they did not
-- just create. A membership row moved to another user or account counts
-- as a removal of the old one.
CREATE OR REPLACE FUNCTION public.sluice_base_forget_creator() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  UPDATE public.accounts SET created_by = NULL
   WHERE id = OLD.account_id AND created_by = OLD.user_id;
  RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER sluice_base_forget_creator
  AFTER DELETE OR UPDATE OF user_id, account_id ON public.account_members
  FOR EACH ROW EXECUTE FUNCTION public.sluice_base_forget_creator();

-- Whoever creates an account becomes its owner.
CREATE OR REPLACE FUNCTION public.sluice_base_add_account_owner() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF auth.uid() IS NOT NULL THEN
    INSERT INTO public.account_members (account_id, user_id, role)
    VALUES (NEW.id, auth.uid(), 'owner')
    ON CONFLICT (account_id, user_id) DO NOTHING;
  END IF;
  RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER sluice_base_add_owner
  AFTER INSERT ON public.accounts
  FOR EACH ROW EXECUTE FUNCTION public.sluice_base_add_account_owner();

-- ---------------------------------------------------------------- RLS

ALTER TABLE public.accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.account_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.projects ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.interviews ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.insights ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.personas ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS sluice_accounts_select ON public.accounts;
-- Members see their accounts; the creator also sees the account while it
-- has no member the creator can see, which is the case when INSERT ...
-- RETURNING checks this policy: the owner is added by an AFTER trigger,
-- after that check. (No function here: one that answered about any
-- account id would tell a tenant which ids exist.)
CREATE POLICY sluice_accounts_select ON public.accounts FOR SELECT
  USING (public.sluice_is_account_member(id)
         OR (created_by = auth.uid()
             AND NOT EXISTS (SELECT 1 FROM public.account_members m
                             WHERE m.account_id = accounts.id)));
DROP POLICY IF EXISTS sluice_accounts_insert ON public.accounts;
CREATE POLICY sluice_accounts_insert ON public.accounts FOR INSERT
  WITH CHECK (auth.uid() IS NOT NULL AND created_by = auth.uid());
DROP POLICY IF EXISTS sluice_accounts_update ON public.accounts;
CREATE POLICY sluice_accounts_update ON public.accounts FOR UPDATE
  USING (public.sluice_is_account_owner(id))
  WITH CHECK (public.sluice_is_account_owner(id));
DROP POLICY IF EXISTS sluice_accounts_delete ON public.accounts;
CREATE POLICY sluice_accounts_delete ON public.accounts FOR DELETE
  USING (public.sluice_is_account_owner(id));

DROP POLICY IF EXISTS sluice_members_select ON public.account_members;
CREATE POLICY sluice_members_select ON public.account_members FOR SELECT
  USING (user_id = auth.uid() OR public.sluice_is_account_member(account_id));
DROP POLICY IF EXISTS sluice_members_insert ON public.account_members;
CREATE POLICY sluice_members_insert ON public.account_members FOR INSERT
  WITH CHECK (public.sluice_is_account_owner(account_id));
DROP POLICY IF EXISTS sluice_members_update ON public.account_members;
CREATE POLICY sluice_members_update ON public.account_members FOR UPDATE
  USING (public.sluice_is_account_owner(account_id))
  WITH CHECK (public.sluice_is_account_owner(account_id));
DROP POLICY IF EXISTS sluice_members_delete ON public.account_members;
CREATE POLICY sluice_members_delete ON public.account_members FOR DELETE
  USING (public.sluice_is_account_owner(account_id));

DROP POLICY IF EXISTS sluice_projects_member ON public.projects;
CREATE POLICY sluice_projects_member ON public.projects FOR ALL
  USING (public.sluice_is_account_member(account_id))
  WITH CHECK (public.sluice_is_account_member(account_id));

-- A foreign key is checked without RLS: the project an interview names
-- must be visible to the caller and belong to the interview's own account,
-- or a tenant could file its interviews under another account's project.
DROP POLICY IF EXISTS sluice_interviews_member ON public.interviews;
CREATE POLICY sluice_interviews_member ON public.interviews FOR ALL
  USING (public.sluice_is_account_member(account_id))
  WITH CHECK (public.sluice_is_account_member(account_id)
              AND (project_id IS NULL
                   OR EXISTS (SELECT 1 FROM public.projects p
                              WHERE p.id = interviews.project_id
                                AND p.account_id = interviews.account_id)));

-- Insights and personas inherit visibility from their interview.
DROP POLICY IF EXISTS sluice_insights_interview ON public.insights;
CREATE POLICY sluice_insights_interview ON public.insights FOR ALL
  USING (EXISTS (SELECT 1 FROM public.interviews i
                 WHERE i.id = insights.interview_id))
  WITH CHECK (EXISTS (SELECT 1 FROM public.interviews i
                      WHERE i.id = insights.interview_id));
DROP POLICY IF EXISTS sluice_personas_interview ON public.personas;
CREATE POLICY sluice_personas_interview ON public.personas FOR ALL
  USING (EXISTS (SELECT 1 FROM public.interviews i
                 WHERE i.id = personas.interview_id))
  WITH CHECK (EXISTS (SELECT 1 FROM public.interviews i
                      WHERE i.id = personas.interview_id));

-- ---------------------------------------------------------------- grants

-- SECURITY DEFINER functions run with their owner's rights: nobody but the
-- application role may call them (PostgreSQL grants EXECUTE to PUBLIC by
-- default). The trigger function needs no EXECUTE grant to fire. Each
-- answers only about the caller's own memberships.
REVOKE ALL ON FUNCTION public.sluice_is_account_member(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.sluice_is_account_owner(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.sluice_base_forget_creator() FROM PUBLIC;
REVOKE ALL ON FUNCTION public.sluice_base_add_account_owner() FROM PUBLIC;

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'sluice_app') THEN
    GRANT USAGE ON SCHEMA public TO sluice_app;
    GRANT SELECT, INSERT, UPDATE, DELETE ON
      public.accounts, public.account_members, public.projects,
      public.interviews, public.insights, public.personas
      TO sluice_app;
    GRANT EXECUTE ON FUNCTION public.sluice_is_account_member(uuid),
      public.sluice_is_account_owner(uuid) TO sluice_app;
    -- The worker (this role) acts as sluice_app for a job's requester
    -- (SET LOCAL ROLE): a role that created sluice_app without being a
    -- superuser may need the membership granted to itself.
    IF NOT pg_catalog.pg_has_role(current_user, 'sluice_app', 'MEMBER') THEN
      BEGIN
        EXECUTE pg_catalog.format('GRANT sluice_app TO %I', current_user);
      EXCEPTION WHEN insufficient_privilege OR invalid_grant_operation THEN
        RAISE NOTICE 'sluice: cannot grant sluice_app to % (%)', current_user, SQLERRM;
      END;
    END IF;
    BEGIN
      GRANT USAGE ON SCHEMA auth TO sluice_app;
      GRANT EXECUTE ON FUNCTION auth.uid() TO sluice_app;
    EXCEPTION WHEN insufficient_privilege OR undefined_function THEN
      RAISE NOTICE 'sluice: cannot grant auth.uid() to sluice_app (%)', SQLERRM;
    END;
  END IF;
END $$;
