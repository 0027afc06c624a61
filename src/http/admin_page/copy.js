document.addEventListener('DOMContentLoaded', function () {
  var button = document.getElementById('copy-token');
  if (!button) return;
  button.addEventListener('click', function () {
    var value = document.getElementById('new-token-value').textContent;
    var done = function () { button.textContent = 'Copied'; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(value).then(done);
    } else {
      var area = document.createElement('textarea');
      area.value = value; document.body.appendChild(area); area.select();
      document.execCommand('copy'); document.body.removeChild(area); done();
    }
  });
});
