// `{{var}}` templates: the subset of Twig/Mustache syntax shop mail templates use.

/**
 * Replaces every `{{ name }}` with the variable's value: strings as they are, null as
 * nothing, other values as JSON. A variable not in `vars` is an error that names it.
 */
export function render(template, vars) {
  let out = '';
  let rest = template;
  for (let start = rest.indexOf('{{'); start !== -1; start = rest.indexOf('{{')) {
    out += rest.slice(0, start);
    const after = rest.slice(start + 2);
    const end = after.indexOf('}}');
    if (end === -1) {
      throw new Error(`\`{{\` without a closing \`}}\` near \`${rest.slice(start, start + 20)}\``);
    }
    const name = after.slice(0, end).trim();
    if (!Object.hasOwn(vars, name)) throw new Error(`unknown variable \`${name}\``);
    const value = vars[name];
    out += typeof value === 'string' ? value : value === null ? '' : JSON.stringify(value);
    rest = after.slice(end + 2);
  }
  return out + rest;
}
