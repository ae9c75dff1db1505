import type { Command } from 'commander';
import { ValidationError } from '../../errors.js';
import { cliConfig } from '../config.js';
import { out, printJson } from '../io.js';

export function registerSchema(program: Command): void {
  program
    .command('schema [type]')
    .description(
      'the job contract: queue, job name, payload and result as JSON Schema, job options (all operations, or one)',
    )
    .option('--markdown', 'docs/jobs.md: every operation, for people (with the default configuration)')
    .action(async (type: string | undefined, options: { markdown?: boolean }) => {
      const [{ loadConfig }, { isOperationType, operationTypes }, { jobContract, operationContract, renderJobsDoc }] =
        await Promise.all([
          import('../../config.js'),
          import('../../operations/index.js'),
          import('../../queue/contract.js'),
        ]);
      if (options.markdown) return out(renderJobsDoc(loadConfig({})).trimEnd());
      if (type === undefined) return printJson(jobContract(cliConfig()));
      if (!isOperationType(type))
        throw new ValidationError(`unknown operation type "${type}" (one of: ${operationTypes.join(', ')})`);
      printJson(operationContract(type, cliConfig()));
    });
}
