// Writes the CLI's flag table, derived from the payload schemas, to stdout (npm run gen:flags).
import process from 'node:process';
import { renderPayloadFlagsModule } from '../dist/src/cli/derive-flags.js';

process.stdout.write(renderPayloadFlagsModule());
