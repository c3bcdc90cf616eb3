"""The demo app's database: a 12-table Prisma-style SQLite schema, and how the app opens the file.

Storage is what Prisma Client writes to SQLite: ``DATETIME`` columns hold unix milliseconds,
``BOOLEAN`` columns 0/1, ``JSONB`` columns JSON text, ids are cuid-like text (or AUTOINCREMENT
integers for the log tables), composite keys and ``ON DELETE CASCADE`` foreign keys as
``prisma migrate`` declares them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE "organizations" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "name" TEXT NOT NULL,
    "slug" TEXT NOT NULL,
    "plan" TEXT NOT NULL DEFAULT 'FREE',
    "settings" JSONB,
    "isActive" BOOLEAN NOT NULL DEFAULT true,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL
);
CREATE UNIQUE INDEX "organizations_slug_key" ON "organizations"("slug");

CREATE TABLE "users" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "email" TEXT NOT NULL,
    "name" TEXT,
    "passwordHash" TEXT NOT NULL,
    "role" TEXT NOT NULL DEFAULT 'USER',
    "isActive" BOOLEAN NOT NULL DEFAULT true,
    "lastLoginAt" DATETIME,
    "preferences" JSONB,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL
);
CREATE UNIQUE INDEX "users_email_key" ON "users"("email");

CREATE TABLE "user_organizations" (
    "userId" TEXT NOT NULL,
    "organizationId" TEXT NOT NULL,
    "role" TEXT NOT NULL DEFAULT 'MEMBER',
    "joinedAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,

    PRIMARY KEY ("userId", "organizationId"),
    CONSTRAINT "user_organizations_userId_fkey" FOREIGN KEY ("userId") REFERENCES "users" ("id")
        ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "user_organizations_organizationId_fkey" FOREIGN KEY ("organizationId") REFERENCES "organizations" ("id")
        ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE INDEX "user_organizations_organizationId_idx" ON "user_organizations"("organizationId");

CREATE TABLE "ai_providers" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "name" TEXT NOT NULL,
    "type" TEXT NOT NULL,
    "baseUrl" TEXT,
    "models" JSONB NOT NULL,
    "isEnabled" BOOLEAN NOT NULL DEFAULT true,
    "costPer1kTokens" REAL NOT NULL DEFAULT 0,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL
);
CREATE UNIQUE INDEX "ai_providers_name_key" ON "ai_providers"("name");

CREATE TABLE "organization_ai_configs" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "organizationId" TEXT NOT NULL,
    "providerId" TEXT NOT NULL,
    "model" TEXT NOT NULL,
    "temperature" REAL NOT NULL DEFAULT 0.7,
    "maxTokens" INTEGER NOT NULL DEFAULT 1024,
    "isDefault" BOOLEAN NOT NULL DEFAULT false,
    "settings" JSONB,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL,
    CONSTRAINT "organization_ai_configs_organizationId_fkey" FOREIGN KEY ("organizationId")
        REFERENCES "organizations" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "organization_ai_configs_providerId_fkey" FOREIGN KEY ("providerId")
        REFERENCES "ai_providers" ("id") ON DELETE RESTRICT ON UPDATE CASCADE
);
CREATE UNIQUE INDEX "organization_ai_configs_organizationId_providerId_key"
    ON "organization_ai_configs"("organizationId", "providerId");

CREATE TABLE "ai_usage_logs" (
    "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    "organizationId" TEXT NOT NULL,
    "userId" TEXT,
    "providerId" TEXT NOT NULL,
    "model" TEXT NOT NULL,
    "promptTokens" INTEGER NOT NULL,
    "completionTokens" INTEGER NOT NULL,
    "costUsd" REAL NOT NULL,
    "latencyMs" INTEGER NOT NULL,
    "success" BOOLEAN NOT NULL DEFAULT true,
    "errorMessage" TEXT,
    "metadata" JSONB,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "ai_usage_logs_organizationId_fkey" FOREIGN KEY ("organizationId")
        REFERENCES "organizations" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "ai_usage_logs_userId_fkey" FOREIGN KEY ("userId")
        REFERENCES "users" ("id") ON DELETE SET NULL ON UPDATE CASCADE,
    CONSTRAINT "ai_usage_logs_providerId_fkey" FOREIGN KEY ("providerId")
        REFERENCES "ai_providers" ("id") ON DELETE RESTRICT ON UPDATE CASCADE
);
CREATE INDEX "ai_usage_logs_organizationId_createdAt_idx" ON "ai_usage_logs"("organizationId", "createdAt");

CREATE TABLE "api_configurations" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "name" TEXT NOT NULL,
    "baseUrl" TEXT NOT NULL,
    "authType" TEXT NOT NULL DEFAULT 'API_KEY',
    "headers" JSONB,
    "rateLimitPerMin" INTEGER,
    "isActive" BOOLEAN NOT NULL DEFAULT true,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL
);
CREATE UNIQUE INDEX "api_configurations_name_key" ON "api_configurations"("name");

CREATE TABLE "organization_api_credentials" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "organizationId" TEXT NOT NULL,
    "apiConfigurationId" TEXT NOT NULL,
    "encryptedKey" TEXT NOT NULL,
    "isValid" BOOLEAN NOT NULL DEFAULT true,
    "expiresAt" DATETIME,
    "lastUsedAt" DATETIME,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL,
    CONSTRAINT "organization_api_credentials_organizationId_fkey" FOREIGN KEY ("organizationId")
        REFERENCES "organizations" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "organization_api_credentials_apiConfigurationId_fkey" FOREIGN KEY ("apiConfigurationId")
        REFERENCES "api_configurations" ("id") ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE UNIQUE INDEX "organization_api_credentials_organizationId_apiConfigurationId_key"
    ON "organization_api_credentials"("organizationId", "apiConfigurationId");

CREATE TABLE "data_source_mappings" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "organizationId" TEXT NOT NULL,
    "apiConfigurationId" TEXT NOT NULL,
    "sourceEntity" TEXT NOT NULL,
    "targetEntity" TEXT NOT NULL,
    "mapping" JSONB NOT NULL,
    "isActive" BOOLEAN NOT NULL DEFAULT true,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL,
    CONSTRAINT "data_source_mappings_organizationId_fkey" FOREIGN KEY ("organizationId")
        REFERENCES "organizations" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "data_source_mappings_apiConfigurationId_fkey" FOREIGN KEY ("apiConfigurationId")
        REFERENCES "api_configurations" ("id") ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE INDEX "data_source_mappings_organizationId_idx" ON "data_source_mappings"("organizationId");

CREATE TABLE "field_configurations" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "mappingId" TEXT NOT NULL,
    "fieldName" TEXT NOT NULL,
    "sourcePath" TEXT NOT NULL,
    "dataType" TEXT NOT NULL DEFAULT 'STRING',
    "isRequired" BOOLEAN NOT NULL DEFAULT false,
    "isVisible" BOOLEAN NOT NULL DEFAULT true,
    "displayOrder" INTEGER NOT NULL DEFAULT 0,
    "transform" JSONB,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL,
    CONSTRAINT "field_configurations_mappingId_fkey" FOREIGN KEY ("mappingId")
        REFERENCES "data_source_mappings" ("id") ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE UNIQUE INDEX "field_configurations_mappingId_fieldName_key" ON "field_configurations"("mappingId", "fieldName");

CREATE TABLE "pfa_records" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "organizationId" TEXT NOT NULL,
    "mappingId" TEXT,
    "externalId" TEXT NOT NULL,
    "category" TEXT NOT NULL,
    "status" TEXT NOT NULL DEFAULT 'ACTIVE',
    "amount" REAL NOT NULL DEFAULT 0,
    "quantity" INTEGER NOT NULL DEFAULT 1,
    "periodStart" DATETIME NOT NULL,
    "periodEnd" DATETIME,
    "isForecast" BOOLEAN NOT NULL DEFAULT false,
    "isDiscontinued" BOOLEAN NOT NULL DEFAULT false,
    "data" JSONB,
    "syncedAt" DATETIME,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL,
    CONSTRAINT "pfa_records_organizationId_fkey" FOREIGN KEY ("organizationId")
        REFERENCES "organizations" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "pfa_records_mappingId_fkey" FOREIGN KEY ("mappingId")
        REFERENCES "data_source_mappings" ("id") ON DELETE SET NULL ON UPDATE CASCADE
);
CREATE UNIQUE INDEX "pfa_records_organizationId_externalId_key" ON "pfa_records"("organizationId", "externalId");
CREATE INDEX "pfa_records_organizationId_status_idx" ON "pfa_records"("organizationId", "status");

CREATE TABLE "sync_logs" (
    "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    "organizationId" TEXT NOT NULL,
    "mappingId" TEXT,
    "status" TEXT NOT NULL DEFAULT 'RUNNING',
    "recordsRead" INTEGER NOT NULL DEFAULT 0,
    "recordsWritten" INTEGER NOT NULL DEFAULT 0,
    "errors" JSONB,
    "startedAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "finishedAt" DATETIME,
    "durationMs" INTEGER,
    CONSTRAINT "sync_logs_organizationId_fkey" FOREIGN KEY ("organizationId")
        REFERENCES "organizations" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "sync_logs_mappingId_fkey" FOREIGN KEY ("mappingId")
        REFERENCES "data_source_mappings" ("id") ON DELETE SET NULL ON UPDATE CASCADE
);
CREATE INDEX "sync_logs_organizationId_startedAt_idx" ON "sync_logs"("organizationId", "startedAt");
"""

TABLES = (
    "users",
    "organizations",
    "user_organizations",
    "ai_providers",
    "organization_ai_configs",
    "ai_usage_logs",
    "api_configurations",
    "organization_api_credentials",
    "data_source_mappings",
    "field_configurations",
    "pfa_records",
    "sync_logs",
)


def connect(path: Path | str, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """How the app opens its file: autocommit (explicit BEGINs), foreign keys on, a busy timeout."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn
